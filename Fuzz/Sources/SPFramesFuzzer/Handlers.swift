import ExampleProtocols
import UserProto

/// A handler's counters in one shape, for the checks: what it delivered,
/// dropped by its rules, dropped over its unanswered limit, and (REQ,
/// SURVEYOR) ignored as not answering the current request or survey.
struct Counters: Sendable {
  var delivered = 0
  var dropped = 0
  var overLimit = 0
  var ignored = 0
  /// Why its pipes failed, oldest first.
  var failures: [String] = []
}

/// An SP handler this target drives.
protocol FuzzedHandler: SocketHandler {
  var pipes: SPPipes { get }
  var counters: Counters { get }
}

extension Pull0Handler: FuzzedHandler {
  var counters: Counters { Counters(delivered: statistics.received, failures: pipes.recentFailures) }
}

extension Bus0Handler: FuzzedHandler {
  var counters: Counters { Counters(delivered: statistics.received, failures: pipes.recentFailures) }
}

extension Pair0Handler: FuzzedHandler {
  var counters: Counters { Counters(delivered: statistics.received, failures: pipes.recentFailures) }
}

extension Pair1Handler: FuzzedHandler {
  var counters: Counters {
    Counters(delivered: statistics.received, dropped: statistics.messagesOverTTL, failures: pipes.recentFailures)
  }
}

extension Sub0Handler: FuzzedHandler {
  var counters: Counters {
    Counters(delivered: statistics.delivered, dropped: statistics.filtered, failures: pipes.recentFailures)
  }
}

extension Push0Handler: FuzzedHandler {
  var counters: Counters { Counters(dropped: statistics.ignoredMessages, failures: pipes.recentFailures) }
}

extension Pub0Handler: FuzzedHandler {
  var counters: Counters { Counters(dropped: statistics.ignoredMessages, failures: pipes.recentFailures) }
}

extension Rep0Handler: FuzzedHandler {
  var counters: Counters {
    Counters(
      delivered: statistics.requestsDelivered, dropped: statistics.requestsOverTTL,
      overLimit: statistics.requestsOverLimit, failures: pipes.recentFailures)
  }
}

extension Respondent0Handler: FuzzedHandler {
  var counters: Counters {
    Counters(
      delivered: statistics.surveysDelivered, dropped: statistics.surveysOverTTL,
      overLimit: statistics.surveysOverLimit, failures: pipes.recentFailures)
  }
}

extension Req0Handler: FuzzedHandler {
  var counters: Counters {
    Counters(
      delivered: statistics.repliesDelivered, ignored: statistics.ignoredReplies, failures: pipes.recentFailures)
  }
}

extension Surveyor0Handler: FuzzedHandler {
  var counters: Counters {
    Counters(
      delivered: statistics.answersDelivered, dropped: statistics.unreadAtExpiry, ignored: statistics.lateAnswers,
      failures: pipes.recentFailures)
  }
}
