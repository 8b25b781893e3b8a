@testable public import UserProto

/// The far end of an in-memory pipe, played by the fuzzer: it writes what
/// the input says (raw bytes, headers, frames), pauses and resumes its
/// reading, half-closes, closes or resets, and records everything the
/// socket wrote to it.
///
/// The pipe is a `MemoryTransport` pair, the transport `inproc://` uses:
/// the socket's side is attached to the socket as a pipe of `url` (SP
/// sockets frame per the url: `ipc://` is SP/IPC, anything else SP/TCP),
/// this side is driven here. Loop-confined, as the transports are.
public final class MemoryPeer {
  private var transport: MemoryTransport?
  /// Everything the socket wrote to this peer, in order.
  public private(set) var received: [UInt8] = []
  /// Everything this peer wrote that its transport took (before its write
  /// side was shut or it was closed), in order.
  public private(set) var written: [UInt8] = []
  /// The socket's side finished sending (it closed or shut its write side).
  public private(set) var sawEnd = false
  /// The pipe failed on this side (the socket's side went while this one
  /// still had output, or it reset).
  public private(set) var failure: IOError?
  /// This side shut its write side (``shutdownWrite()``).
  public private(set) var isWriteShut = false
  /// This side closed or reset the pipe.
  public private(set) var isClosed = false
  /// Reading is paused (``pauseReading()``).
  public private(set) var isPaused = false

  private init(_ transport: MemoryTransport) { self.transport = transport }

  /// On the loop: connects a new peer to `socket` as a pipe of `url`.
  public static func attach<H>(to socket: Socket<H>, url: TransportURL) -> MemoryPeer {
    let (ours, theirs) = MemoryTransport.pair(loop: socket.loop)
    let peer = MemoryPeer(theirs)
    theirs.start(peer)
    socket.core.attach(ours, dialer: nil, url: url)
    return peer
  }

  /// On the loop: connects a new peer to a ``ProtocolSocket`` (the first
  /// socket design, one connection per socket) that has no connection yet.
  public static func attach(to socket: ProtocolSocket) -> MemoryPeer {
    let (ours, theirs) = MemoryTransport.pair(loop: socket.loop)
    let peer = MemoryPeer(theirs)
    theirs.start(peer)
    socket.attach(ours)
    return peer
  }

  /// Writes `bytes` to the socket (nothing once this side shut its write
  /// side or closed; nothing for an empty chunk, as on a stream).
  public func write(_ bytes: [UInt8]) {
    guard let transport, !isWriteShut, !bytes.isEmpty else { return }
    written += bytes
    transport.write(bytes)
  }

  /// Stops taking what the socket writes (its output then backs up).
  public func pauseReading() {
    guard let transport else { return }
    isPaused = true
    transport.pauseReading()
  }

  /// Takes what the socket writes again.
  public func resumeReading() {
    guard let transport else { return }
    isPaused = false
    transport.resumeReading()
  }

  /// Sends end-of-stream after what was written (a TCP half-close).
  public func shutdownWrite() {
    guard let transport, !isWriteShut else { return }
    isWriteShut = true
    transport.shutdownWrite()
  }

  /// Closes this side: the socket sees end-of-stream after what was written.
  public func close() {
    guard let transport else { return }
    isClosed = true
    isWriteShut = true
    transport.close()
    self.transport = nil
  }

  /// Resets the pipe: the socket sees an error after what was written.
  public func reset() {
    guard let transport else { return }
    isClosed = true
    isWriteShut = true
    transport.reset()
    self.transport = nil
  }
}

// The transport's callbacks: public only because `@testable` shows the
// protocol as public; nothing outside the fuzz targets uses them.
extension MemoryPeer: TransportDelegate {
  public func transportConnected(local: SocketAddress?, remote: SocketAddress?) {}
  public func transportReceived(_ bytes: [UInt8]) { received += bytes }
  public func transportReachedEnd() { sawEnd = true }
  public func transportFinishedWriting() {}
  public func transportWrote(_ count: Int, messages: Int) {}
  public func transportFailed(_ error: IOError) {
    failure = error
    transport?.close()
    transport = nil
  }
}
