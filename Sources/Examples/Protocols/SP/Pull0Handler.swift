public import UserProto

/// A PULL v0 socket: `Socket<Pull0Handler>`.
public typealias Pull0Socket = Socket<Pull0Handler>

/// SP PULL v0 (NNG's pull0, nanomsg's NN_PULL) on a socket with pipes: the
/// receiving end of a pipeline.
///
/// Delivers every message its PUSH peers send, whole (v0 pipelines carry no
/// SP header in the body), in the order the loop reads them: each pipe's
/// messages stay in order, and the pipes are read as their data arrives,
/// one chunk at a time each, so no pipe can starve another (NNG's pull0
/// queues in arrival order too). When the application stops receiving,
/// reading pauses on every pipe at the receive high watermark, and the
/// PUSH peers stop being able to write to it.
///
/// PULL sends nothing: ``sendsMessages`` is false, so a send throws
/// `SocketError.notSupported(_:)` (and, like every socket that cannot
/// send, the fd shows writable so that a poller learns it at once).
///
/// ```swift
/// let pull = try Socket(Pull0Handler(), loop: loop)
/// try pull.listen("tcp://*:5557")
/// for try await job in pull.messages { print(job) }
/// ```
public final class Pull0Handler: SocketHandler {
  /// False: a PULL socket sends nothing, and a send throws.
  public static var sendsMessages: Bool { false }

  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages delivered to the application.
    public var received = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Per pipe that is up (by id): messages delivered from it so far.
  public private(set) var receivedPerPipe: [UInt64: Int] = [:]

  /// A PULL v0 handler; a pipe whose pusher sends no SP header within `headerTimeout` fails.
  public init(headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.pull0, peer: .push0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers every message, whole, and counts it for its pipe.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try context.deliver(input.readBytes(length) ?? [])
      statistics.received += 1
      receivedPerPipe[pipe.id, default: 0] += 1
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe and its count of messages received.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    pipes.removed(pipe, error: error)
    receivedPerPipe[pipe.id] = nil
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }
}
