public import UserProto

/// A SURVEYOR v0 socket: `Socket<Surveyor0Handler>`.
public typealias Surveyor0Socket = Socket<Surveyor0Handler>

/// SP SURVEYOR v0 (NNG's surveyor0, nanomsg's NN_SURVEYOR) on a socket with
/// pipes: ask every respondent at once, collect the answers for a while.
///
/// Each send starts a survey: the message, prefixed with a 32-bit survey id
/// whose high bit is set (a random start, then incrementing, as REQ's
/// request ids), is written to every pipe that completed its SP handshake,
/// framed once per framing. A send never waits: a pipe whose output is not
/// writable drops the survey for that pipe only, counted in
/// ``Statistics/drops`` and ``dropsPerPipe`` (as PUB does); with no
/// respondent the survey simply gets no answer.
///
/// Answers carrying the current survey's id are delivered (their body,
/// without the id) until ``surveyTime`` has passed since the send; then the
/// survey ends. Answers that come after that, or that carry any other id,
/// are dropped and counted in ``Statistics/lateAnswers``. When a survey
/// ends, the answers still queued for the application are discarded too
/// (counted in ``Statistics/unreadAtExpiry``): with no survey active there
/// is nothing to receive and the fd is not readable (NNG's surv0 flushes
/// them the same way, and its receive fails with NNG_ESTATE or
/// NNG_ETIMEDOUT). A new survey ends the previous one
/// (``sendCancelsReceive``): once the send is accepted, no answer to an
/// earlier survey is received, even one already queued (those are counted
/// in the socket's `SocketStatistics.staleDrops`).
///
/// An answer shorter than a survey id, or whose id lacks the high bit, is a
/// protocol violation and fails that pipe only (as REQ v0 treats replies).
///
/// ```swift
/// let surveyor = try Socket(Surveyor0Handler(surveyTime: .milliseconds(500)), loop: loop)
/// try surveyor.listen("tcp://*:5559")
/// try await surveyor.send(Array("who is there?".utf8))
/// while case .message(let answer) = try surveyor.tryReceive() { print(answer) }
/// ```
public final class Surveyor0Handler: SocketHandler {
  /// True: a new survey ends the previous one, whose answers are then never received.
  public static var sendCancelsReceive: Bool { true }

  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// How long a survey collects answers (NNG_OPT_SURVEYOR_SURVEYTIME;
  /// default 1 s, as NNG and nanomsg). Zero or less, or a duration too long
  /// for the loop's clock, never ends a survey by time (only the next one
  /// does). A change applies from the next survey.
  public var surveyTime: Duration

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Surveys the application started (sends).
    public var surveys = 0
    /// Copies of surveys written to respondents' pipes.
    public var copiesSent = 0
    /// Copies dropped because a respondent's pipe was not writable.
    public var drops = 0
    /// Answers delivered to the application.
    public var answersDelivered = 0
    /// Answers dropped: after their survey ended, or for another survey.
    public var lateAnswers = 0
    /// Delivered answers the application had not received when their
    /// survey ended by time (discarded then).
    public var unreadAtExpiry = 0
    /// Surveys that ended because their survey time passed.
    public var expiredSurveys = 0
    /// Survey copies written to a pipe that went (the respondent failed or
    /// closed) before handing them on to the kernel (or the in-process peer):
    /// lost with it. What the kernel had taken when the pipe went but the peer
    /// never read cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// Per respondent pipe (by id): survey copies dropped for it so far.
  public private(set) var dropsPerPipe: [UInt64: Int] = [:]

  /// The id of the survey collecting answers now, if one is.
  public private(set) var currentSurveyID: UInt32?
  private var surveyTimer: HandlerTimer?
  private var nextID = UInt32.random(in: 0...UInt32.max) | 0x8000_0000

  /// A SURVEYOR v0 handler whose surveys collect answers for `surveyTime`; a pipe whose
  /// respondent sends no SP header within `headerTimeout` fails.
  public init(surveyTime: Duration = .seconds(1), headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    self.surveyTime = surveyTime
    pipes = SPPipes(.surveyor0, peer: .respondent0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers the answers to the current survey (their body, without the id) and drops the others.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try answer(&input, length: length, context: context)
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

  /// Fails a pipe whose SP header is late; on the survey timer, ends the survey and discards its unread answers.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) {
    if pipes.timerFired(timer) { return }
    guard timer === surveyTimer else { return }
    surveyTimer = nil
    guard currentSurveyID != nil else { return }
    currentSurveyID = nil
    statistics.expiredSurveys += 1
    // No survey, nothing to receive: what the application has not read yet
    // goes too, so the fd stops showing readable.
    statistics.unreadAtExpiry += (try? context.discardReceivedMessages()) ?? 0
  }

  /// Cancels the survey timer and ends the current survey.
  public func socketClosing(context: SocketContext) {
    surveyTimer?.cancel()
    surveyTimer = nil
    currentSurveyID = nil
  }

  /// Starts a survey: writes the message, after a new survey id, to every pipe whose handshake completed. Never waits.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    // The new survey replaces the old one (whose queued answers the socket
    // already dropped: sendCancelsReceive).
    surveyTimer?.cancel()
    surveyTimer = nil
    let id = nextID
    nextID = (nextID &+ 1) | 0x8000_0000
    currentSurveyID = id
    statistics.surveys += 1
    if surveyTime > .zero { surveyTimer = try? context.startTimer(after: surveyTime) }

    let result = pipes.broadcast(SPBacktrace.word(id) + message) { pipe in
      statistics.drops += 1
      dropsPerPipe[pipe.id, default: 0] += 1
    }
    statistics.copiesSent += result.written
    statistics.drops += result.failed  // pipes that are going
    return .taken
  }

  // MARK: Internals

  private func answer(_ input: inout InboundBuffer, length: Int, context: SocketContext) throws(SocketError) {
    guard length >= 4, let id = input.peekBigEndian(UInt32.self) else {
      throw .protocolViolation("an SP answer of \(length) bytes, shorter than its 4-byte survey id")
    }
    guard id & 0x8000_0000 != 0 else {
      throw .protocolViolation("an SP answer whose survey id 0x\(String(id, radix: 16)) lacks the high bit")
    }
    guard let current = currentSurveyID, current == id else {
      statistics.lateAnswers += 1
      return
    }
    input.moveReaderIndex(forwardBy: 4)
    try context.deliver(input.readBytes(length - 4) ?? [])
    statistics.answersDelivered += 1
  }
}
