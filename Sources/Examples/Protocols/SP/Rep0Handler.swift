public import UserProto

/// A REP v0 socket: `Socket<Rep0Handler>`.
public typealias Rep0Socket = Socket<Rep0Handler>

/// SP REP v0 (NNG's rep0, nanomsg's NN_REP) on a socket with pipes.
///
/// Each request's backtrace (the hop words devices added, then the
/// request id, whose high bit is set: RFC sp-request-reply-01) is kept with
/// the pipe it came from, and the application receives the body alone.
/// The application's sends are the replies, **in the order the requests
/// were received**: its first send answers the first request delivered to
/// it, the second the second, and so on, each going back on its request's
/// pipe with its backtrace. The usual server loop
/// (`for try await request in rep.messages { try await rep.send(reply) }`)
/// does exactly that; it may also receive several requests before
/// answering them, in order.
///
/// A send with no request left to answer cannot be refused at the call:
/// `SocketHandler.validateSend(_:)` is static and never sees which
/// requests are outstanding, and a throwing ``send(_:context:)`` would fail
/// the whole socket. So such a reply (where NNG's send returns
/// NNG_ESTATE) is dropped on the loop and counted in
/// ``Statistics/repliesWithoutRequest``. A reply whose requester has gone
/// (its pipe closed) is dropped and counted too, and so is one whose pipe
/// cannot take it (the requester stopped reading; a REQ sends its request
/// again after its resend time).
///
/// A request whose backtrace is longer than ``ttl`` hops is dropped (it
/// went through too many devices; NNG does the same, without closing the
/// pipe); one with no word carrying the high bit before it ends is a
/// protocol violation and fails that pipe only. At most
/// ``maximumUnansweredRequests`` requests wait for their replies; further
/// ones are dropped (counted) until the application catches up.
///
/// ```swift
/// let rep = try Socket(Rep0Handler(), loop: loop)
/// try rep.listen("tcp://*:5555")
/// for try await request in rep.messages { try await rep.send(request) }  // echo
/// ```
public final class Rep0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// The most hops a request's backtrace may have (NNG_OPT_MAXTTL; NNG's
  /// default is 8, and it accepts 1 to 15). Values below 1 count as 1.
  public var ttl: Int
  /// How many delivered requests may wait for their replies.
  public var maximumUnansweredRequests: Int

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Requests delivered to the application.
    public var requestsDelivered = 0
    /// Replies written to their requester's pipe.
    public var repliesSent = 0
    /// Requests dropped: backtrace over the TTL.
    public var requestsOverTTL = 0
    /// Requests dropped because too many were waiting for replies.
    public var requestsOverLimit = 0
    /// Sends made when no request was waiting for its reply (dropped).
    public var repliesWithoutRequest = 0
    /// Replies dropped because their requester's pipe had gone.
    public var repliesToVanishedPeers = 0
    /// Replies dropped because their requester's pipe could not take them.
    public var repliesToStalledPeers = 0
    /// Replies written to a pipe that went (the requester failed or closed)
    /// before handing them on to the kernel (or the in-process peer): lost with
    /// it. What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Requests delivered and not answered yet, with where their answers go.
  private var replies = SPReplyQueue()

  /// Requests delivered and not answered yet.
  public var unansweredRequests: Int { replies.count }

  /// A REP v0 handler with these limits; a pipe whose requester sends no SP header within `headerTimeout` fails.
  public init(
    ttl: Int = 8, maximumUnansweredRequests: Int = 1024, headerTimeout: Duration = SPPipes.defaultHeaderTimeout
  ) {
    self.ttl = ttl
    self.maximumUnansweredRequests = maximumUnansweredRequests
    pipes = SPPipes(.rep0, peer: .req0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers each request's body and keeps its pipe and backtrace for the reply; drops one over the TTL or the limit.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try request(&input, length: length, pipe: pipe, context: context)
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe; a reply still owed to it is dropped (counted) when its turn comes.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    statistics.lostWithPipes += pipes.removed(pipe, error: error)
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Sends the message as the reply to the oldest unanswered request, or drops it (counted). Never waits.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    switch replies.reply(message, through: pipes) {
    case .sent: statistics.repliesSent += 1
    case .noneWaiting: statistics.repliesWithoutRequest += 1
    case .peerGone: statistics.repliesToVanishedPeers += 1
    case .peerStalled: statistics.repliesToStalledPeers += 1
    }
    return .taken
  }

  // MARK: Internals

  private func request(
    _ input: inout InboundBuffer, length: Int, pipe: SocketPipe, context: SocketContext
  ) throws(SocketError) {
    let limit = maximumUnansweredRequests
    switch try replies.take(
      &input, length: length, from: pipe, ttl: ttl, limit: limit, kind: "request", context: context)
    {
    case .delivered: statistics.requestsDelivered += 1
    case .overTTL: statistics.requestsOverTTL += 1
    case .overLimit: statistics.requestsOverLimit += 1
    }
  }
}
