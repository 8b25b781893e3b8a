public import UserProto

/// A BUS v0 socket: `Socket<Bus0Handler>`.
public typealias Bus0Socket = Socket<Bus0Handler>

/// SP BUS v0 (NNG's bus0, nanomsg's NN_BUS) on a socket with pipes: every
/// member hears every directly connected member.
///
/// Each message the application sends is written to every pipe that
/// completed its SP handshake, framed once per framing. A send never waits:
/// a pipe whose output is not writable drops the message for that pipe
/// only, counted in ``Statistics/drops`` and ``dropsPerPipe`` (as PUB does;
/// NNG's bus0 drops when a pipe's queue is full too). Every message a peer
/// sends is delivered to the application, whole. The body carries no SP
/// header: NNG's cooked bus0 adds none (only a raw bus, for devices, puts
/// the pipe id in the header and forwards to every pipe but the one the
/// message came from; this socket is the cooked one, so its sends go to all
/// pipes and nothing is ever forwarded).
///
/// A bus is not a relay: a message reaches only the peers this socket has a
/// pipe to. For every member to hear every other, connect every pair (a
/// mesh); in a star, the leaves hear only the hub.
///
/// ```swift
/// let bus = try Socket(Bus0Handler(), loop: loop)
/// try bus.listen("tcp://*:5560")
/// try bus.dial("tcp://10.0.0.2:5560")
/// try bus.trySend(Array("hello, everyone".utf8))
/// ```
public final class Bus0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages the application sent.
    public var sent = 0
    /// Copies written to peers' pipes.
    public var copiesSent = 0
    /// Copies dropped because a peer's pipe was not writable.
    public var drops = 0
    /// Messages delivered to the application.
    public var received = 0
    /// Copies written to a pipe that went (the peer failed or closed) before
    /// handing them on to the kernel (or the in-process peer): lost with it.
    /// What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Per peer pipe (by id): copies dropped for it so far.
  public private(set) var dropsPerPipe: [UInt64: Int] = [:]
  /// Per peer pipe that is up (by id): messages delivered from it so far.
  public private(set) var receivedPerPipe: [UInt64: Int] = [:]

  /// A BUS v0 handler; a pipe whose peer sends no SP header within `headerTimeout` fails.
  public init(headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.bus0, peer: .bus0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers every message a peer sends, whole, and counts it for its pipe.
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

  /// Forgets the pipe and its counts.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    statistics.lostWithPipes += pipes.removed(pipe, error: error)
    dropsPerPipe[pipe.id] = nil
    receivedPerPipe[pipe.id] = nil
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Writes the message to every pipe whose handshake completed; a pipe that cannot take it drops it. Never waits.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    statistics.sent += 1
    let result = pipes.broadcast(message) { pipe in
      statistics.drops += 1
      dropsPerPipe[pipe.id, default: 0] += 1
    }
    statistics.copiesSent += result.written
    statistics.drops += result.failed  // pipes that are going
    return .taken
  }
}
