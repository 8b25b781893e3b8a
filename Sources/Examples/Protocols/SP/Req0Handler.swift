public import UserProto

/// A REQ v0 socket: `Socket<Req0Handler>`.
public typealias Req0Socket = Socket<Req0Handler>

/// SP REQ v0 (NNG's req0, nanomsg's NN_REQ) on a socket with pipes.
///
/// Each request the application sends gets a 32-bit request id with its
/// high bit set (RFC sp-request-reply-01: a random start, then
/// incrementing), prepended to the body on the wire. The request goes to
/// one pipe that completed its SP handshake and can take it, round robin
/// across those pipes; when none can, the send waits in the socket's send
/// queue (the socket stops showing writable once that queue is full).
///
/// Only the reply carrying the latest request's id is delivered (its body,
/// without the id); replies with another id are dropped and counted. A new
/// request abandons the previous one (``sendCancelsReceive``): once the send
/// is accepted, no reply to an earlier request is received, even one that
/// was already queued.
///
/// Without a reply within ``resendInterval`` the request is sent again
/// (same id) on the next pipe. When the pipe that carries the outstanding
/// request goes away, the request is sent again at once on another pipe
/// (or on the next pipe that completes its handshake).
///
/// A reply shorter than a request id, or whose id lacks the high bit, is a
/// protocol violation and fails that pipe only.
///
/// ```swift
/// let req = try Socket(Req0Handler(), loop: loop)
/// try req.dial("tcp://127.0.0.1:5555")
/// try await req.send(Array("ping".utf8))
/// let reply = try await req.receive()
/// ```
public final class Req0Handler: SocketHandler {
  /// True: a new request abandons the previous one, whose reply is then never received.
  public static var sendCancelsReceive: Bool { true }

  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// How long to wait for a reply before sending the request again
  /// (NNG_OPT_REQ_RESENDTIME; default 60 s, as NNG and nanomsg). Zero or
  /// less never resends, and neither does a duration too long for the
  /// loop's clock. A change applies from the next (re)send.
  public var resendInterval: Duration

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Requests put on the wire for the first time.
    public var requestsSent = 0
    /// Requests sent again because no reply came within the resend interval.
    public var timedResends = 0
    /// Requests sent again at once because their pipe went away.
    public var pipeLossResends = 0
    /// Replies delivered to the application.
    public var repliesDelivered = 0
    /// Replies dropped: for an abandoned or unknown request, or duplicates.
    public var ignoredReplies = 0
    /// Requests abandoned by a newer one before their reply came.
    public var abandonedRequests = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  private struct Outstanding {
    let id: UInt32
    /// The request id and the body: the message on the wire, unframed.
    let wire: [UInt8]
    /// The pipe that carries it; nil while it waits for a pipe.
    var pipeID: UInt64?
  }
  private var outstanding: Outstanding?
  private var resendTimer: HandlerTimer?
  private var nextID = UInt32.random(in: 0...UInt32.max) | 0x8000_0000
  private var cursor = 0

  /// The request id of the request awaiting its reply, if any.
  public var outstandingRequestID: UInt32? { outstanding?.id }

  /// A REQ v0 handler that resends an unanswered request after `resendInterval`; a pipe whose
  /// replier sends no SP header within `headerTimeout` fails.
  public init(resendInterval: Duration = .seconds(60), headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    self.resendInterval = resendInterval
    pipes = SPPipes(.req0, peer: .rep0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers the reply to the outstanding request (its body, without the id) and drops any other reply.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context, handshake: { _ in handshakeCompleted(context) }) {
      (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try reply(&input, length: length, context: context)
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe; when it carried the outstanding request, sends that request again at once on another pipe.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    pipes.removed(pipe, error: error)
    guard var request = outstanding, request.pipeID == pipe.id else { return }
    // Its pipe went with the request: send it again now, elsewhere.
    request.pipeID = nil
    outstanding = request
    if transmit(context: context) { statistics.pipeLossResends += 1 }
  }

  /// Sends the outstanding request, if it waits for a pipe, on the next pipe that can take it.
  public func pipeWritable(_ pipe: SocketPipe, context: SocketContext) {
    if outstanding?.pipeID == nil, transmit(context: context) { statistics.pipeLossResends += 1 }
  }

  /// Fails a pipe whose SP header is late; on the resend timer, sends the outstanding request again on the next pipe.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) {
    if pipes.timerFired(timer) { return }
    guard timer === resendTimer else { return }
    resendTimer = nil
    guard outstanding != nil else { return }
    outstanding?.pipeID = nil
    if transmit(context: context) {
      statistics.timedResends += 1
    } else {
      armResend(context)  // no pipe now: the next pipe up takes it, or the next round
    }
  }

  /// Cancels the resend timer and forgets the outstanding request.
  public func socketClosing(context: SocketContext) {
    resendTimer?.cancel()
    resendTimer = nil
    outstanding = nil
  }

  /// Abandons the previous request and writes this one, with a new request id, to the next
  /// ready, writable pipe; waits while there is none.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    if outstanding != nil {
      // A new request abandons the old one, whether or not it can go now.
      outstanding = nil
      resendTimer?.cancel()
      resendTimer = nil
      statistics.abandonedRequests += 1
    }
    guard let pipe = nextPipe() else { return .wait }
    let id = nextID
    nextID = (nextID &+ 1) | 0x8000_0000
    let wire = [UInt8(id >> 24), UInt8(id >> 16 & 0xff), UInt8(id >> 8 & 0xff), UInt8(id & 0xff)] + message
    outstanding = Outstanding(id: id, wire: wire, pipeID: nil)
    write(on: pipe, context: context)
    statistics.requestsSent += 1
    return .taken
  }

  // MARK: Internals

  private func handshakeCompleted(_ context: SocketContext) {
    if outstanding != nil, outstanding?.pipeID == nil, transmit(context: context) {
      statistics.pipeLossResends += 1
    }
    try? context.resumeSends()  // a send waiting for a ready pipe can go now
  }

  /// The next ready, writable pipe, round robin.
  private func nextPipe() -> SocketPipe? {
    let ready = pipes.ready
    guard !ready.isEmpty else { return nil }
    for step in 0..<ready.count {
      let index = (cursor + step) % ready.count
      if ready[index].isWritable {
        cursor = index + 1
        return ready[index]
      }
    }
    return nil
  }

  /// Sends the outstanding request on the next pipe that can take it;
  /// false when none can (it then waits for one).
  private func transmit(context: SocketContext) -> Bool {
    guard outstanding != nil, let pipe = nextPipe() else { return false }
    write(on: pipe, context: context)
    return true
  }

  private func write(on pipe: SocketPipe, context: SocketContext) {
    guard let request = outstanding else { return }
    do throws(SocketError) {
      try pipe.write(pipes.framing(of: pipe).frame(request.wire))
      outstanding?.pipeID = pipe.id
    } catch {
      outstanding?.pipeID = nil  // the pipe is going; its removal resends
    }
    armResend(context)
  }

  private func armResend(_ context: SocketContext) {
    resendTimer?.cancel()
    resendTimer = nil
    guard resendInterval > .zero else { return }
    resendTimer = try? context.startTimer(after: resendInterval)
  }

  private func reply(_ input: inout InboundBuffer, length: Int, context: SocketContext) throws(SocketError) {
    guard length >= 4, let id = input.peekBigEndian(UInt32.self) else {
      throw .protocolViolation("an SP reply of \(length) bytes, shorter than its 4-byte request id")
    }
    guard id & 0x8000_0000 != 0 else {
      throw .protocolViolation("an SP reply whose request id 0x\(String(id, radix: 16)) lacks the high bit")
    }
    guard let request = outstanding, request.id == id else {
      statistics.ignoredReplies += 1
      return
    }
    outstanding = nil
    resendTimer?.cancel()
    resendTimer = nil
    input.moveReaderIndex(forwardBy: 4)
    try context.deliver(input.readBytes(length - 4) ?? [])
    statistics.repliesDelivered += 1
  }
}
