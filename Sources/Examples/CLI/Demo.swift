import ArgumentParser
import CUserProtoShim
import ExampleProtocols
import Glibc
import Synchronization
import UserProto

/// `userproto demo`: the project's point in one process.
///
/// An SP echo server (one REP socket) with four REQ sockets, and an SP
/// publisher with four subscribers, run over loopback TCP on UserProto's
/// event loop (`Socket<Handler>` with the SP handlers). The demo's own code
/// is a plain poll(2) loop over real fds: the REP socket (it answers each
/// request with its body), four REQ sockets, four SUB sockets and an
/// ordinary kernel TCP socket, reacting to each by readiness alone. One
/// subscriber stalls for a while to show that a slow subscriber never blocks
/// the publisher or the others: its copies are dropped and counted.
struct Demo: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run echo and pub/sub protocols over loopback and poll their fds next to a plain TCP socket.")

  @Option(help: "How long to run, in seconds.")
  var seconds: Double = 3
  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard seconds.isFinite, seconds > 0, seconds <= 3600 else {
      throw ValidationError("--seconds must be more than 0 and at most 3600, not \(seconds)")
    }
  }

  /// What a run saw, for its own checks and for tests.
  struct Summary {
    var roundTrips = 0
    var published = 0
    /// Per subscriber (in the order of `topics`): messages received, copies
    /// the publisher dropped for it, messages it filtered out.
    var received: [Int] = []
    var dropped: [Int] = []
    var filtered: [Int] = []
    var totalDropped = 0
    var tickerLines = 0
    var mismatches = 0
    /// The stalled subscriber's index.
    var stalled = 3

    /// What went wrong, if anything: mismatched replies or topics, a
    /// requester or subscriber that got nothing, or a drop for a subscriber
    /// that kept reading.
    var problems: [String] {
      var found: [String] = []
      if mismatches > 0 { found.append("\(mismatches) mismatched replies or topics") }
      if roundTrips == 0 { found.append("no echo round trip") }
      for (i, n) in received.enumerated() where n == 0 { found.append("subscriber \(i + 1) received nothing") }
      for (i, n) in dropped.enumerated() where i != stalled && n > 0 {
        found.append("subscriber \(i + 1) kept reading but lost \(n) messages")
      }
      if dropped.reduce(0, +) != totalDropped { found.append("per-subscriber drops do not add up to \(totalDropped)") }
      for i in received.indices where received[i] + dropped[i] + filtered[i] != published {
        found.append(
          "subscriber \(i + 1): \(received[i]) received + \(dropped[i]) dropped + \(filtered[i]) filtered != \(published)"
        )
      }
      return found
    }
  }

  static let topics = ["news", "sports", "weather", ""]

  func run() throws {
    let summary = try runDemo()
    if !summary.problems.isEmpty { throw ExitCode.failure }
  }

  func runDemo() throws -> Summary {
    let logger = logging.logger(label: "userproto.demo")
    let loop = try EventLoop(logger: logger)
    defer { loop.shutdownAndWait() }
    // What every socket's mask fd uses (each one makes the same choice).
    let (maskLayout, maskReason) = try MaskFD.choose(.automatic, usage: .socket)

    let echo = try Socket(Rep0Handler(), loop: loop, logger: logger)
    defer { try? echo.close() }
    let echoURL = try echo.listen("tcp://127.0.0.1:0")
    // Small per-subscriber queues, so the stalled subscriber's drops show.
    let publisher = try Socket(
      Pub0Handler(), loop: loop, options: SocketOptions(sendHighWatermark: 64 * 1024, sendLowWatermark: 16 * 1024),
      logger: logger)
    defer { try? publisher.close() }
    let publisherURL = try publisher.listen("tcp://127.0.0.1:0")
    let requesters = try (0..<4).map { _ in try Socket(Req0Handler(), loop: loop, logger: logger) }
    defer { for r in requesters { r.abort() } }
    for r in requesters { try r.dial(echoURL) }
    let topics = Demo.topics
    // One at a time, so the publisher's pipes complete their handshakes in
    // this order: `subscriberPipes[i]` is subscriber i's pipe.
    var subscribers: [Sub0Socket] = []
    defer { for s in subscribers { s.abort() } }
    func readyPipes() throws -> [UInt64] {
      try publisher.withHandlerAndWait { h, _ in h.pipes.ready.map { $0.id } }
    }
    for topic in topics {
      let s = try Socket(Sub0Handler(subscriptions: [Array(topic.utf8)]), loop: loop, logger: logger)
      subscribers.append(s)
      try s.dial(publisherURL)
      let deadline = EventLoop.now() + 5_000_000_000
      while try readyPipes().count < subscribers.count && EventLoop.now() < deadline { usleep(1000) }
    }
    let subscriberPipes = try readyPipes()
    guard subscriberPipes.count == subscribers.count else {
      throw CommandFailure("only \(subscriberPipes.count) of \(subscribers.count) subscribers connected")
    }
    // Per subscriber: copies the publisher dropped for it.
    func dropCounts() throws -> [Int] {
      let perPipe = try publisher.withHandlerAndWait { h, _ in h.dropsPerPipe }
      return subscriberPipes.map { perPipe[$0] ?? 0 }
    }
    // Per subscriber: messages it filtered out.
    func filteredCounts() throws -> [Int] {
      try subscribers.map { s in try s.withHandlerAndWait { h, _ in h.statistics.filtered } }
    }
    let ticker = try TickerConnection()
    defer { ticker.close() }

    print("UserProto demo: SP echo (REQ/REP) and pub/sub over loopback TCP, polled with plain poll(2)")
    print("  mask fds:   \(maskLayout) (\(maskLayout.descriptorCount) fd per socket); \(maskReason)")
    print("  event loop: \(loop.backend); \(loop.backendReason); \(loop.capabilities.joined(separator: "; "))")
    print("  echo server \(echoURL), publisher \(publisherURL)")
    print(
      "  poll set: 1 REP fd, 4 REQ fds, 4 SUB fds and 1 ordinary TCP socket; "
        + "subscriber 4 (\"\") stalls for the first half\n")

    var latencies: [UInt64] = []
    var sentAt = [UInt64](repeating: 0, count: requesters.count)
    var pending = [[UInt8]?](repeating: nil, count: requesters.count)
    var received = [Int](repeating: 0, count: subscribers.count)
    // Per subscriber: the sequence number of the last message it received
    // (so it has seen, kept or filtered out, every message up to it).
    var lastSeen = [Int](repeating: -1, count: subscribers.count)
    var tickerLines = 0
    var published = 0
    var mismatches = 0
    let stalledIndex = 3
    let start = EventLoop.now()
    let end = start + UInt64(seconds * 1e9)
    let stallUntil = start + UInt64(seconds * 0.5e9)
    var nextReport = start + 500_000_000
    var sequence = 0
    let filler = [UInt8](repeating: 0x2e, count: 2048)
    // The publisher never waits, but the demo paces itself by the subscribers
    // that keep reading: at most this many messages (about 2 KiB each) ahead
    // of the slowest of them, well under their 64 KiB queues, so only the
    // stalled subscriber can lose messages.
    let maximumAhead = 16
    func take(_ message: [UInt8], subscriber i: Int) {
      if !message.starts(with: Array(topics[i].utf8)) { mismatches += 1 }
      if let n = Demo.sequence(of: message) { lastSeen[i] = max(lastSeen[i], n) }
      received[i] += 1
    }

    while EventLoop.now() < end {
      let now = EventLoop.now()
      // Publish (three topics in turn, 2 KiB payload) unless a reading
      // subscriber is behind; each sees every message and filters it.
      // Messages after the last one a subscriber received are still on
      // their way to it, or filtered out since (at most two).
      let behind = subscribers.indices.filter { $0 != stalledIndex }.map { published - 1 - lastSeen[$0] }.max() ?? 0
      if behind < maximumAhead {
        let topic = ["news", "sports", "weather"][published % 3]
        if try publisher.trySend(Array("\(topic): update \(published) ".utf8) + filler) { published += 1 }
      }
      // Issue a request on every idle REQ socket.
      for (i, r) in requesters.enumerated() where pending[i] == nil {
        let body = Array("ping \(sequence)".utf8)
        sequence += 1
        if try r.trySend(body) {
          pending[i] = body
          sentAt[i] = EventLoop.now()
        }
      }
      // One poll set: protocol sockets and an ordinary TCP socket together.
      var fds = [pollfd(fd: echo.fileDescriptor, events: Int16(POLLIN), revents: 0)]
      fds += requesters.map { pollfd(fd: $0.fileDescriptor, events: Int16(POLLIN), revents: 0) }
      for (i, s) in subscribers.enumerated() {
        let stalled = i == stalledIndex && now < stallUntil
        fds.append(pollfd(fd: s.fileDescriptor, events: stalled ? 0 : Int16(POLLIN), revents: 0))
      }
      fds.append(pollfd(fd: ticker.fd, events: Int16(POLLIN), revents: 0))
      _ = poll(&fds, nfds_t(fds.count), 1)

      if fds[0].revents & Int16(POLLIN) != 0 { try echoRequests(echo) }
      for (i, r) in requesters.enumerated() where fds[1 + i].revents & Int16(POLLIN) != 0 {
        while case .message(let reply) = try r.tryReceive() {
          if reply != pending[i] { mismatches += 1 }
          latencies.append(EventLoop.now() - sentAt[i])
          pending[i] = nil
        }
      }
      for (i, s) in subscribers.enumerated() where fds[1 + requesters.count + i].revents & Int16(POLLIN) != 0 {
        while case .message(let m) = try s.tryReceive() { take(m, subscriber: i) }
      }
      if fds.last!.revents & Int16(POLLIN) != 0 { tickerLines += ticker.readLines() }

      if EventLoop.now() >= nextReport {
        nextReport += 500_000_000
        let t = Double(EventLoop.now() - start) / 1e9
        let drops = try dropCounts().map(String.init).joined(separator: "/")
        print(
          "  t=\(format(t, 1))s  echo round trips \(latencies.count)  published \(published)  "
            + "received \(received.map(String.init).joined(separator: "/"))  dropped \(drops)  tcp lines \(tickerLines)"
        )
      }
    }

    // Let every subscriber take what is still on its way, so each one's
    // received, dropped and filtered-out messages add up to what was
    // published. Normally a few milliseconds; the bound only matters on a
    // machine so loaded that the loop falls seconds behind.
    let drainDeadline = EventLoop.now() + 20_000_000_000
    while EventLoop.now() < drainDeadline {
      let drops = try dropCounts()
      let filteredOut = try filteredCounts()
      let settled = subscribers.indices.allSatisfy { received[$0] + filteredOut[$0] + drops[$0] == published }
      if settled { break }
      var fds = subscribers.map { pollfd(fd: $0.fileDescriptor, events: Int16(POLLIN), revents: 0) }
      _ = poll(&fds, nfds_t(fds.count), 10)
      for (i, s) in subscribers.enumerated() {
        while case .message(let m) = try s.tryReceive() { take(m, subscriber: i) }
      }
    }

    let stats = try publisher.withHandlerAndWait { h, _ in h.statistics }
    let dropped = try dropCounts()
    let filtered = try filteredCounts()
    let summary = Summary(
      roundTrips: latencies.count, published: stats.published, received: received, dropped: dropped,
      filtered: filtered, totalDropped: stats.drops, tickerLines: tickerLines, mismatches: mismatches,
      stalled: stalledIndex)
    let sorted = latencies.sorted()
    func percentile(_ p: Double) -> String {
      sorted.isEmpty
        ? "-" : "\(format(Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000, 1)) us"
    }
    print("\nSummary")
    print(
      "  echo:    \(latencies.count) round trips by 4 REQ sockets; latency p50 \(percentile(0.5)), p90 \(percentile(0.9)), p99 \(percentile(0.99))"
    )
    print(
      "  pub/sub: \(stats.published) published; \(stats.delivered) copies queued, \(stats.drops) dropped (publisher never blocked)"
    )
    for (i, _) in subscribers.enumerated() {
      let label = topics[i].isEmpty ? "everything" : "\"\(topics[i])\""
      let role = i == stalledIndex ? ", stalled for the first half" : ""
      print(
        "           subscriber \(i + 1) (\(label)\(role)): \(received[i]) received, \(summary.dropped[i]) dropped, \(summary.filtered[i]) filtered out"
      )
    }
    print("  tcp:     \(tickerLines) lines from an ordinary kernel TCP socket in the same poll set")
    print("  mask fd: \(maskLayout): \(MaskDemo.describe(maskLayout.backend)) (\(maskReason))")
    print("  loop:    \(loop.backend) (\(loop.backendReason))")
    let problems = summary.problems
    print(
      "  checks:  \(problems.isEmpty ? "passed: no mismatch, and only the stalled subscriber lost messages" : problems.joined(separator: "; "))"
    )
    fflush(nil)
    return summary
  }

  /// The sequence number of a published message (`TOPIC: update N ...`).
  static func sequence(of message: [UInt8]) -> Int? {
    let marker = Array(": update ".utf8)
    guard let colon = message.firstIndex(of: marker[0]), message[colon...].starts(with: marker) else { return nil }
    let digits = message[(colon + marker.count)...].prefix { $0 >= 0x30 && $0 <= 0x39 }
    return Int(String(decoding: digits, as: UTF8.self))
  }
}

func format(_ value: Double, _ decimals: Int) -> String {
  let scale = [1.0, 10, 100, 1000][decimals]
  let scaled = Int((value * scale).rounded())
  let whole = scaled / Int(scale)
  let fraction = abs(scaled % Int(scale))
  guard decimals > 0 else { return String(whole) }
  let digits = String(fraction)
  return "\(whole).\(String(repeating: "0", count: decimals - digits.count))\(digits)"
}

/// An ordinary kernel TCP connection whose far end writes a line every
/// 100 ms from its own thread: the plain socket in the demo's poll set.
final class TickerConnection: @unchecked Sendable {
  let fd: Int32
  private let writer: Int32
  private final class Flag: Sendable { let done = Atomic<Bool>(false) }
  private let flag = Flag()

  init() throws {
    (writer, fd) = try MixedPoll.kernelTCPPair()
    let writer = self.writer
    let flag = self.flag
    AppThread {
      var n = 0
      while !flag.done.load(ordering: .acquiring) {
        let line = Array("tick \(n)\n".utf8)
        _ = send(writer, line, line.count, Int32(MSG_NOSIGNAL))
        n += 1
        usleep(100_000)
      }
    }.detach()
  }

  /// Reads what is there; returns the number of complete lines.
  func readLines() -> Int {
    var chunk = [UInt8](repeating: 0, count: 4096)
    var lines = 0
    while true {
      let n = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
      guard n > 0 else { break }
      lines += chunk[0..<n].filter { $0 == 0x0a }.count
    }
    return lines
  }

  func close() {
    flag.done.store(true, ordering: .releasing)
    Glibc.close(fd)
    usleep(150_000)
    Glibc.close(writer)
  }
}
