public import UserProto

/// A PUSH v0 socket: `Socket<Push0Handler>`.
public typealias Push0Socket = Socket<Push0Handler>

/// SP PUSH v0 (NNG's push0, nanomsg's NN_PUSH) on a socket with pipes: the
/// sending end of a pipeline.
///
/// Each message the application sends goes to exactly one PULL peer: the
/// next pipe, round robin, that completed its SP handshake and is writable
/// (its output below the send high watermark). When no pipe can take it,
/// the send waits (`SendDisposition.wait`): it stays first in the
/// socket's send queue, so once that queue is full the socket's fd stops
/// showing writable, and it goes as soon as a pipe completes its handshake
/// or drains to its low watermark. A message the socket accepted is never
/// dropped for want of a pipe; it is lost only if the pipe it was written
/// to fails before the peer read it, or the socket closes while it still
/// waits (NNG's push0 behaves the same). Of the first, what the pipe had not
/// yet handed to the kernel is counted in ``Statistics/lostWithPipes``. v0
/// pipelines carry no SP header in the body: the frame is the message.
///
/// PUSH receives nothing: messages a PULL peer sends anyway are parsed (so
/// the framing and size limits still hold), discarded and counted in
/// ``Statistics/ignoredMessages``, as NNG's push0 does; the socket never
/// becomes readable for them.
///
/// ```swift
/// let push = try Socket(Push0Handler(), loop: loop)
/// try push.dial("tcp://127.0.0.1:5557")
/// try await push.send(Array("job 1".utf8))
/// ```
public final class Push0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages written to a PULL peer's pipe.
    public var sent = 0
    /// Messages that had to wait because no pipe could take them when they
    /// were first offered (each counted once, however long it waited).
    public var heldBack = 0
    /// Messages PULL peers sent (discarded: PUSH receives nothing).
    public var ignoredMessages = 0
    /// Messages written to a pipe that went (failed, or its peer closed) before
    /// handing them on to the kernel (or the in-process peer): lost with it.
    /// What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Per pipe that is up (by id): messages written to it so far.
  public private(set) var sentPerPipe: [UInt64: Int] = [:]

  /// Where the round robin over ``SPPipes/ready`` starts next.
  private var cursor = 0
  /// True while the first queued message waits for a pipe (so it is
  /// counted in ``Statistics/heldBack`` once).
  private var holding = false

  /// A PUSH v0 handler; a pipe whose puller sends no SP header within `headerTimeout` fails.
  public init(headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.push0, peer: .pull0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Parses what a puller sends and discards it; a completed handshake offers waiting sends again.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context, handshake: { _ in handshakeCompleted(context) }) {
      (_: inout InboundBuffer, _: Int, _: SocketPipe) throws(SocketError) in
      statistics.ignoredMessages += 1
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe and its count of messages sent.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    statistics.lostWithPipes += pipes.removed(pipe, error: error)
    sentPerPipe[pipe.id] = nil
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Writes the message to the next ready, writable pipe, round robin; waits while there is none.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    let ready = pipes.ready
    for step in 0..<ready.count {
      let index = (cursor + step) % ready.count
      let pipe = ready[index]
      guard pipe.isWritable else { continue }
      do throws(SocketError) {
        try pipe.write(pipes.framing(of: pipe).frame(message))
      } catch {
        continue  // the pipe is going: the next one takes the message
      }
      cursor = index + 1
      holding = false
      statistics.sent += 1
      sentPerPipe[pipe.id, default: 0] += 1
      return .taken
    }
    if !holding {
      holding = true
      statistics.heldBack += 1
    }
    // Offered again when a pipe completes its handshake (below) or one
    // drains to its low watermark (the socket does that after pipeWritable).
    return .wait
  }

  // MARK: Internals

  private func handshakeCompleted(_ context: SocketContext) {
    try? context.resumeSends()  // a send waiting for a ready pipe can go now
  }
}
