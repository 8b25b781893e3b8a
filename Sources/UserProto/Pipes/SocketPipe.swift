import Glibc
import Logging

/// One connection of a ``Socket``: dialed, accepted by one of its
/// listeners, a UDP peer, or an in-process peer.
///
/// Pipes are loop-confined: a handler gets them in its hooks and from
/// ``SocketContext/pipes``, keeps them (or their ``id``) in its own state,
/// and writes to them on the loop. Called off the loop, ``write(_:)`` throws
/// ``SocketError/notOnLoop(_:)``.
public final class SocketPipe: Hashable, CustomStringConvertible {
  /// Unique within its socket, never reused.
  public let id: UInt64
  /// The dialer's or listener's address this pipe belongs to.
  public let url: TransportURL
  /// True for a pipe the socket dialed (it is re-dialed when it goes).
  public var isDialed: Bool { dialer != nil }
  /// True for datagram pipes (UDP): each receive is one datagram.
  public let isDatagram: Bool
  /// This end's address, once connected (nil in memory).
  public private(set) var localAddress: SocketAddress?
  /// The peer's address, once connected (nil in memory).
  public private(set) var remoteAddress: SocketAddress?

  weak var core: SocketCore?
  var transport: (any Transport)?
  let dialer: Dialer?
  var input = InboundBuffer()
  private(set) var isUp = false
  var peerEnded = false
  var outputFinished = false
  /// Written bytes not yet taken by the kernel (or the in-memory peer),
  /// plus ``SocketOptions/perMessageCost`` per write.
  public private(set) var queuedOutputBytes = 0
  /// Writes made to the pipe so far (frames; datagrams on a datagram pipe).
  public private(set) var writtenMessages = 0
  /// Writes not yet wholly taken by the kernel (or the in-memory peer). A
  /// pipe that goes drops them: a handler's
  /// ``SocketHandler/pipeRemoved(_:error:context:)`` still reads the value
  /// the pipe had when it went, so a protocol can count what was lost with
  /// it. Bytes the kernel had taken but the peer never read are not known
  /// here.
  public private(set) var queuedOutputMessages = 0
  private var writableLatch = true
  private let highWatermark: Int
  private let lowWatermark: Int

  init(id: UInt64, core: SocketCore, transport: any Transport, dialer: Dialer?, url: TransportURL) {
    self.id = id
    self.core = core
    self.transport = transport
    self.dialer = dialer
    self.url = url
    isDatagram = transport.isDatagram
    highWatermark = core.options.sendHighWatermark
    lowWatermark = core.options.sendLowWatermark
  }

  /// True only for the same pipe object.
  public static func == (a: SocketPipe, b: SocketPipe) -> Bool { a === b }
  /// Hashes the pipe's identity.
  public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

  /// `pipe ID (URL)`, with the peer's address when it has one.
  public var description: String {
    "pipe \(id) (\(url)\(remoteAddress.map { ", peer \($0)" } ?? ""))"
  }

  /// True while the pipe is up and its output is below its high watermark
  /// (the socket's send high watermark), with hysteresis down to the low
  /// one. A handler routes to writable pipes; a write to a full pipe is
  /// still queued.
  public var isWritable: Bool { isUp && writableLatch }

  /// True until the pipe is removed.
  public var isOpen: Bool { isUp }

  /// Queues bytes (a frame) for the peer, in order; on a datagram pipe,
  /// one datagram.
  /// - Throws: ``SocketError/notOnLoop(_:)`` off the loop;
  ///   ``SocketError/peerVanished`` once the pipe is gone.
  public func write(_ bytes: [UInt8]) throws(SocketError) {
    guard let core, core.loop.inEventLoop else { throw .notOnLoop("SocketPipe.write") }
    guard isUp, let transport else { throw .peerVanished }
    if bytes.isEmpty && !isDatagram { return }
    queuedOutputBytes += bytes.count + SocketOptions.perMessageCost
    writtenMessages += 1
    queuedOutputMessages += 1
    if queuedOutputBytes >= highWatermark { writableLatch = false }
    transport.write(bytes)
  }

  /// Closes the pipe (with `error`, counted as a failure); the handler's
  /// ``SocketHandler/pipeRemoved(_:error:context:)`` follows. A dialed pipe
  /// is re-dialed after the back-off. Off the loop, or on a pipe already
  /// gone, it does nothing.
  public func close(error: SocketError? = nil) {
    guard let core, core.loop.inEventLoop else { return }
    core.removePipe(self, error: error, notify: true)
  }

  /// The pipe's log metadata (docs/logging.md): its id, address, whether it
  /// was dialed, this end's and the peer's address once connected, and
  /// `error` when given.
  func logMetadata(error: SocketError? = nil) -> Logger.Metadata {
    var metadata: Logger.Metadata = [
      "pipe.id": "\(id)",
      "pipe.url": "\(url)",
      "pipe.dialed": "\(isDialed)",
    ]
    if let localAddress { metadata["pipe.local"] = "\(localAddress)" }
    if let remoteAddress { metadata["pipe.peer"] = "\(remoteAddress)" }
    if let error { metadata["error"] = "\(error)" }
    return metadata
  }

  /// Releases the transport; no callbacks follow.
  func finish() {
    isUp = false
    transport?.close()
    transport = nil
    input.removeAll()
  }
}

extension SocketPipe: TransportDelegate {
  func transportConnected(local: SocketAddress?, remote: SocketAddress?) {
    localAddress = local
    remoteAddress = remote
    isUp = true
    core?.pipeConnected(self)
  }

  func transportReceived(_ bytes: [UInt8]) { core?.pipeReceived(self, bytes) }

  func transportReachedEnd() { core?.pipeReachedEnd(self) }

  func transportFinishedWriting() {
    outputFinished = true
    core?.finishPipeIfDone(self)
  }

  func transportWrote(_ count: Int, messages: Int) {
    queuedOutputBytes = max(0, queuedOutputBytes - count - messages * SocketOptions.perMessageCost)
    queuedOutputMessages = max(0, queuedOutputMessages - messages)
    if !writableLatch && queuedOutputBytes <= lowWatermark {
      writableLatch = true
      core?.pipeWritable(self)
    }
  }

  func transportFailed(_ error: IOError) {
    transport = nil
    let reason: SocketError = error.code == ECONNRESET || error.code == EPIPE ? .peerVanished : .transport(error)
    core?.removePipe(self, error: reason, notify: true)
  }
}
