import Glibc
import Locking

/// `inproc://NAME`: sockets in one process, joined by name with in-memory
/// transports (no kernel socket; messages are handed over as they are,
/// without a copy). Both sockets must run on the same event loop.
enum Inproc {
  private struct Entry: @unchecked Sendable {
    // Only dereferenced on `loop`, the listener's loop.
    weak var listener: PipeListener?
    let loop: EventLoop
  }

  private static let names = Lock<[String: Entry]>([:])

  /// Registers a listener under `name`.
  static func register(_ name: String, _ listener: PipeListener, loop: EventLoop) throws(SocketError) {
    try names.withLock { (n: inout [String: Entry]) throws(SocketError) in
      if let existing = n[name], existing.listener != nil {
        throw .transport(IOError("listen(inproc://\(name))", EADDRINUSE))
      }
      n[name] = Entry(listener: listener, loop: loop)
    }
  }

  /// The loop of the listener registered under `name`, if any.
  static func loop(of name: String) -> EventLoop? {
    names.withLock { n in n[name].flatMap { $0.listener == nil ? nil : $0.loop } }
  }

  static func unregister(_ name: String, _ listener: PipeListener) {
    names.withLock { n in
      if let existing = n[name], existing.listener === listener || existing.listener == nil { n[name] = nil }
    }
  }

  /// A transport to the listener named `name`, whose peer it adopts. On
  /// `core`'s loop.
  static func connect(_ name: String, from core: SocketCore) throws(IOError) -> any Transport {
    let entry = names.withLock { $0[name] }
    guard let entry, let listener = entry.listener else { throw IOError("connect(inproc://\(name))", ECONNREFUSED) }
    guard entry.loop === core.loop else {
      // MemoryTransport is confined to one loop.
      throw IOError("connect(inproc://\(name)): the listening socket runs on another event loop", EXDEV)
    }
    let (ours, theirs) = MemoryTransport.pair(loop: core.loop)
    guard listener.adoptInproc(theirs) else { throw IOError("connect(inproc://\(name))", ECONNREFUSED) }
    return ours
  }
}
