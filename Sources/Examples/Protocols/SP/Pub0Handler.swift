public import UserProto

/// A PUB v0 socket: `Socket<Pub0Handler>`.
public typealias Pub0Socket = Socket<Pub0Handler>

/// SP PUB v0 (NNG's pub0, nanomsg's NN_PUB) on a socket with pipes.
///
/// Each message the application sends is written to every pipe that
/// completed its SP handshake, framed once per framing (the pipes share the
/// frame). A send never waits: a pipe whose output is not writable (its
/// subscriber stopped reading and its queue reached the send high
/// watermark) drops the message for that pipe only, counted in
/// ``Statistics/drops``; with no subscriber the message is simply gone, as
/// in NNG. Filtering happens at the subscribers (SUB v0 has no upstream
/// subscription messages).
///
/// PUB receives nothing: messages a peer sends anyway are parsed (so the
/// framing and size limits still hold), dropped and counted, as NNG does.
///
/// ```swift
/// let pub = try Socket(Pub0Handler(), loop: loop)
/// try pub.listen("tcp://*:5556")
/// try pub.trySend(Array("news: hello".utf8))
/// let drops = try await pub.withHandler { h, _ in h.statistics.drops }
/// ```
public final class Pub0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages the application published.
    public var published = 0
    /// Copies written to subscribers' pipes.
    public var delivered = 0
    /// Copies dropped because a subscriber's pipe was not writable.
    public var drops = 0
    /// Messages subscribers sent (dropped: PUB receives nothing).
    public var ignoredMessages = 0
    /// Copies written to a pipe that went (the subscriber failed or closed)
    /// before handing them on to the kernel (or the in-process peer): lost with
    /// it. What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Copies dropped because a subscriber's pipe was not writable.
  public var drops: Int { statistics.drops }
  /// Per subscriber pipe (by id): copies dropped for it so far.
  public private(set) var dropsPerPipe: [UInt64: Int] = [:]

  /// A PUB v0 handler; a pipe whose subscriber sends no SP header within `headerTimeout` fails.
  public init(headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.pub0, peer: .sub0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Parses what a subscriber sends and drops it, counted in ``Statistics/ignoredMessages``.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (_: inout InboundBuffer, _: Int, _: SocketPipe) throws(SocketError) in
      statistics.ignoredMessages += 1
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe and its drop count.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    statistics.lostWithPipes += pipes.removed(pipe, error: error)
    dropsPerPipe[pipe.id] = nil
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Writes the message to every pipe whose handshake completed; a pipe that cannot take it drops it. Never waits.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    statistics.published += 1
    let (written, failed) = pipes.broadcast(message) { pipe in
      statistics.drops += 1
      dropsPerPipe[pipe.id, default: 0] += 1
    }
    statistics.delivered += written
    statistics.drops += failed  // those pipes are going
    return .taken
  }
}
