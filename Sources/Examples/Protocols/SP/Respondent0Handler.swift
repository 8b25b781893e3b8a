public import UserProto

/// A RESPONDENT v0 socket: `Socket<Respondent0Handler>`.
public typealias Respondent0Socket = Socket<Respondent0Handler>

/// SP RESPONDENT v0 (NNG's respondent0, nanomsg's NN_RESPONDENT) on a socket
/// with pipes: answers the surveys a SURVEYOR sends.
///
/// It works as ``Rep0Handler`` does. Each survey's backtrace (the hop words
/// devices added, then the survey id, whose high bit is set) is kept with
/// the pipe it came from, and the application receives the body alone. The
/// application's sends are the answers, **in the order the surveys were
/// received**: its first send answers the first survey delivered to it, the
/// second the second, and so on, each going back on its survey's pipe with
/// its backtrace. The usual loop
/// (`for try await survey in respondent.messages { try await respondent.send(answer) }`)
/// does exactly that. A survey the application does not want to answer
/// still takes its turn: answer it anyway (its surveyor drops an answer
/// that comes after the survey ended), or the next answer goes to it.
///
/// A send with no survey left to answer cannot be refused at the call:
/// `SocketHandler.validateSend(_:)` is static and never sees which
/// surveys are waiting, and a throwing ``send(_:context:)`` would fail the
/// whole socket. So such an answer (where NNG's send returns NNG_ESTATE) is
/// dropped on the loop and counted in ``Statistics/answersWithoutSurvey``,
/// as REP v0 does with a reply without a request. An answer whose surveyor
/// has gone (its pipe closed) is dropped and counted too, and so is one
/// whose pipe cannot take it.
///
/// A survey whose backtrace is longer than ``ttl`` hops is dropped (NNG
/// does the same, without closing the pipe); one with no word carrying the
/// high bit is a protocol violation and fails that pipe only. At most
/// ``maximumUnansweredSurveys`` surveys wait for their answers; further ones
/// are dropped (counted) until the application catches up.
///
/// ```swift
/// let respondent = try Socket(Respondent0Handler(), loop: loop)
/// try respondent.dial("tcp://127.0.0.1:5559")
/// for try await survey in respondent.messages { try await respondent.send(Array("here".utf8)) }
/// ```
public final class Respondent0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// The most hops a survey's backtrace may have (NNG_OPT_MAXTTL; NNG's
  /// default is 8, and it accepts 1 to 15). Values below 1 count as 1.
  public var ttl: Int
  /// How many delivered surveys may wait for their answers.
  public var maximumUnansweredSurveys: Int

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Surveys delivered to the application.
    public var surveysDelivered = 0
    /// Answers written to their surveyor's pipe.
    public var answersSent = 0
    /// Surveys dropped: backtrace over the TTL.
    public var surveysOverTTL = 0
    /// Surveys dropped because too many were waiting for answers.
    public var surveysOverLimit = 0
    /// Sends made when no survey was waiting for its answer (dropped).
    public var answersWithoutSurvey = 0
    /// Answers dropped because their surveyor's pipe had gone.
    public var answersToVanishedPeers = 0
    /// Answers dropped because their surveyor's pipe could not take them.
    public var answersToStalledPeers = 0
    /// Answers written to a pipe that went (the surveyor failed or closed)
    /// before handing them on to the kernel (or the in-process peer): lost with
    /// it. What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Surveys delivered and not answered yet, with where their answers go.
  private var replies = SPReplyQueue()

  /// Surveys delivered and not answered yet.
  public var unansweredSurveys: Int { replies.count }

  /// A RESPONDENT v0 handler with these limits; a pipe whose surveyor sends no SP header within `headerTimeout` fails.
  public init(
    ttl: Int = 8, maximumUnansweredSurveys: Int = 1024, headerTimeout: Duration = SPPipes.defaultHeaderTimeout
  ) {
    self.ttl = ttl
    self.maximumUnansweredSurveys = maximumUnansweredSurveys
    pipes = SPPipes(.respondent0, peer: .surveyor0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers each survey's body and keeps its pipe and backtrace for the answer; drops one over the TTL or the limit.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try survey(&input, length: length, pipe: pipe, context: context)
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe; an answer still owed to it is dropped (counted) when its turn comes.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    statistics.lostWithPipes += pipes.removed(pipe, error: error)
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Sends the message as the answer to the oldest unanswered survey, or drops it (counted). Never waits.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    switch replies.reply(message, through: pipes) {
    case .sent: statistics.answersSent += 1
    case .noneWaiting: statistics.answersWithoutSurvey += 1
    case .peerGone: statistics.answersToVanishedPeers += 1
    case .peerStalled: statistics.answersToStalledPeers += 1
    }
    return .taken
  }

  // MARK: Internals

  private func survey(
    _ input: inout InboundBuffer, length: Int, pipe: SocketPipe, context: SocketContext
  ) throws(SocketError) {
    let limit = maximumUnansweredSurveys
    switch try replies.take(
      &input, length: length, from: pipe, ttl: ttl, limit: limit, kind: "survey", context: context)
    {
    case .delivered: statistics.surveysDelivered += 1
    case .overTTL: statistics.surveysOverTTL += 1
    case .overLimit: statistics.surveysOverLimit += 1
    }
  }
}
