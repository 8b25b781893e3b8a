import ExampleProtocols
import Glibc
import Synchronization
import UserProto

/// The loops and long-lived sockets of one soak, shared by its workers
/// (SoakRig+Workers.swift) and its sampler (SoakSampler.swift).
///
/// Two loops: the servers (REP, PUB) on one, every client (REQ, SUB) on the
/// other, so each message crosses threads. The echo server and the
/// publisher each listen on TCP and on a Unix-domain socket; the workers
/// alternate between the two.
struct SoakRig: Sendable {
  /// A published message: an 8-byte big-endian sequence number (from 1),
  /// then filler.
  static let messageSize = 128
  /// Messages published a second, and the most sent at once to catch up
  /// after the publisher was held up.
  static let publishRate = 5_000
  static let publishBurst = 500
  /// The slow subscriber takes one message this often.
  static let slowReadInterval: Duration = .milliseconds(250)
  /// Short timers scheduled a round (0 to 5 ms: half cancelled at once, a
  /// quarter after a wait of that order, the rest left to run), and far
  /// ones kept in a ring and cancelled as it turns.
  static let timersPerRound = 64
  static let farTimers = 256
  static let farTimersPerRound = 8
  /// A worker whose counter has not moved for this long has stalled: a
  /// failure (longer than anything a worker may wait for legitimately: a
  /// graceful close lingers at most 5 s).
  static let stallLimit: Duration = .seconds(30)

  let serverLoop: EventLoop
  let clientLoop: EventLoop
  /// The churn's echo server, and its addresses (TCP, IPC).
  let rep: Rep0Socket
  let repURLs: [TransportURL]
  /// The publisher, and its addresses (TCP, IPC).
  let publisher: Pub0Socket
  let pubURLs: [TransportURL]
  /// The subscriber that reads everything (over TCP), and the one that
  /// reads one message every ``slowReadInterval`` (over IPC; its receive
  /// queue is small, so its pipe at the publisher fills and the publisher
  /// drops its copies).
  let fast: Sub0Socket
  let slow: Sub0Socket
  /// The Unix-domain socket paths (removed at the start and the end).
  let ipcPaths: [String]
  let counters = SoakCounters()
  let failures = SoakFailures()

  /// Starts the loops and the long-lived sockets. On a failure the process
  /// exits (what was made goes with it).
  init() throws {
    let stem = "/tmp/userproto-soak-\(getpid())"
    let paths = ["\(stem)-rep.sock", "\(stem)-pub.sock"]
    for path in paths { unlink(path) }
    let serverLoop = try EventLoop(configuration: .init(name: "soak-server"))
    let clientLoop = try EventLoop(configuration: .init(name: "soak-client"))
    let rep = try Rep0Socket(Rep0Handler(), loop: serverLoop)
    let repURLs = [try rep.listen("tcp://127.0.0.1:0"), try rep.listen("ipc://\(paths[0])")]
    // A small per-pipe output bound: a subscriber that stops reading makes
    // the publisher drop within a second or two.
    let publisherOptions = SocketOptions(sendHighWatermark: 64 * 1024, sendLowWatermark: 16 * 1024)
    let publisher = try Pub0Socket(Pub0Handler(), loop: serverLoop, options: publisherOptions)
    let pubURLs = [try publisher.listen("tcp://127.0.0.1:0"), try publisher.listen("ipc://\(paths[1])")]
    let fast = try Sub0Socket(Sub0Handler(subscriptions: [[]]), loop: clientLoop)
    try fast.dial(pubURLs[0])
    let slowOptions = SocketOptions(receiveHighWatermark: 16 * 1024, receiveLowWatermark: 4 * 1024)
    let slow = try Sub0Socket(Sub0Handler(subscriptions: [[]]), loop: clientLoop, options: slowOptions)
    try slow.dial(pubURLs[1])
    self.serverLoop = serverLoop
    self.clientLoop = clientLoop
    self.rep = rep
    self.repURLs = repURLs
    self.publisher = publisher
    self.pubURLs = pubURLs
    self.fast = fast
    self.slow = slow
    ipcPaths = paths
  }

  /// Each worker's counter, for the watchdog and the final check.
  var progress: [(name: String, value: Int)] {
    [
      ("churn", counters.churn.load(ordering: .relaxed)),
      ("echo server", counters.served.load(ordering: .relaxed)),
      ("publisher", counters.published.load(ordering: .relaxed)),
      ("fast subscriber", counters.fastReceived.load(ordering: .relaxed)),
      ("slow subscriber", counters.slowReceived.load(ordering: .relaxed)),
      ("vanishing subscriber", counters.vanished.load(ordering: .relaxed)),
      ("timers", counters.timersScheduled.load(ordering: .relaxed)),
    ]
  }

  // MARK: After the workers stopped

  /// Waits (up to 5 s) for the timers still pending to run, then checks
  /// that every timer either ran or was cancelled in time, and none both.
  /// Before the loops shut down: a timer pending at shutdown does neither.
  func settleTimers() async -> [String] {
    let deadline = ContinuousClock.now + .seconds(5)
    var (scheduled, fired, cancelled) = (0, 0, 0)
    while true {
      scheduled = counters.timersScheduled.load(ordering: .relaxed)
      fired = counters.timersFired.load(ordering: .relaxed)
      cancelled = counters.timersCancelled.load(ordering: .relaxed)
      if fired + cancelled >= scheduled || ContinuousClock.now >= deadline { break }
      try? await Task.sleep(for: .milliseconds(10))
    }
    guard fired + cancelled != scheduled else { return [] }
    return [
      "timers: \(scheduled) scheduled, \(fired) ran and \(cancelled) were cancelled in time: "
        + (fired + cancelled > scheduled
          ? "some ran although cancelled, or twice" : "some never ran nor were cancelled")
    ]
  }

  /// What must hold once the workers stopped: every worker made progress
  /// (checked only when nothing else failed), the echo server answered
  /// every churn cycle, and the REP and PUB handlers counted none of what
  /// cannot happen here. Prints the run's totals (`# end ...`).
  func checkTotals() async -> [String] {
    var problems: [String] = []
    if failures.count == 0 {
      for (name, value) in progress where value == 0 { problems.append("\(name): no progress in the whole run") }
    }
    let churned = counters.churn.load(ordering: .relaxed)
    let served = counters.served.load(ordering: .relaxed)
    if served < churned {
      problems.append("echo server: \(served) requests answered, fewer than the \(churned) churn cycles replied to")
    }
    let repStatistics = try? await rep.withHandler { h, _ in h.statistics }
    let pubStatistics = try? await publisher.withHandler { h, _ in h.statistics }
    if let s = repStatistics {
      if s.repliesWithoutRequest + s.requestsOverTTL + s.requestsOverLimit > 0 {
        problems.append(
          "echo server: \(s.repliesWithoutRequest) replies without a request, \(s.requestsOverTTL) requests over "
            + "the TTL, \(s.requestsOverLimit) over the unanswered limit (all must be 0)")
      }
    } else {
      problems.append("echo server: its REP handler could not be read")
    }
    if let s = pubStatistics {
      if s.ignoredMessages > 0 { problems.append("publisher: \(s.ignoredMessages) messages from subscribers") }
    } else {
      problems.append("publisher: its PUB handler could not be read")
    }
    let published = counters.published.load(ordering: .relaxed)
    var line = "# end churn=\(churned) served=\(served) pub_sent=\(published)"
    line += " fast_recv=\(counters.fastReceived.load(ordering: .relaxed))"
    line += " slow_recv=\(counters.slowReceived.load(ordering: .relaxed))"
    line += " vanished=\(counters.vanished.load(ordering: .relaxed))"
    line += " timers=\(counters.timersScheduled.load(ordering: .relaxed))"
    line += " timers_fired=\(counters.timersFired.load(ordering: .relaxed))"
    line += " timers_cancelled=\(counters.timersCancelled.load(ordering: .relaxed))"
    if let s = pubStatistics {
      line += " pub_published=\(s.published) pub_delivered=\(s.delivered) drops=\(s.drops)"
    }
    if let s = repStatistics {
      line += " rep_replies=\(s.repliesSent) rep_replies_to_vanished=\(s.repliesToVanishedPeers)"
      line += " rep_replies_to_stalled=\(s.repliesToStalledPeers)"
    }
    let pubSocket = publisher.statistics
    let repSocket = rep.statistics
    line += " pub_pipes_added=\(pubSocket.pipesAdded) pub_pipe_failures=\(pubSocket.pipeFailures)"
    line += " rep_pipes_added=\(repSocket.pipesAdded) rep_pipe_failures=\(repSocket.pipeFailures)"
    line += " accept_errors=\(pubSocket.acceptErrors + repSocket.acceptErrors)"
    print(line)
    fflush(nil)
    return problems
  }

  /// Closes the long-lived sockets and waits for each to finish, then
  /// stops the loops.
  func tearDown() async {
    // The subscribers vanish first, so the publisher's graceful close has
    // no stalled pipe to linger on.
    await slow.abortAndWait()
    await fast.abortAndWait()
    await publisher.closeAndWait()
    await rep.closeAndWait()
    await clientLoop.shutdown()
    await serverLoop.shutdown()
    // The listeners removed them when they closed; this is for a run that
    // ended otherwise.
    for path in ipcPaths { unlink(path) }
  }
}
