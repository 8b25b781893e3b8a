import ArgumentParser
import ExampleProtocols
import Glibc
import UserProto

/// `userproto echo-server --listen tcp://127.0.0.1:5555`
///
/// One REP socket (`Socket<Rep0Handler>`) listening: it serves every
/// requester that connects. This thread polls the socket's fd, receives each
/// request and sends its body back before taking the next, so each reply
/// goes to the requester of the request just received.
struct EchoServerCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "echo-server", abstract: "Serve SP REP (rep0): reply to each request with its body.")

  @Option(help: "Address to listen on, e.g. tcp://127.0.0.1:5555.")
  var listen: String = "tcp://127.0.0.1:5555"
  @Option(help: "Stop after this many seconds (0: until SIGINT or SIGTERM).")
  var seconds: Int = 0

  func validate() throws {
    try checkAddress("--listen", listen)
    try checkRange("--seconds", seconds, 0...maximumSeconds)
  }

  func run() throws {
    let url = try transportURL(listen)
    let stop = StopSignals()
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(Rep0Handler(), loop: loop)
    defer { try? server.close() }
    let bound = try server.listen(url)
    print("echo server on \(bound) (loop: \(loop.backend))")
    fflush(nil)
    let deadline = EventLoop.now() + UInt64(seconds) * 1_000_000_000
    var failures = PipeFailureReport()
    while seconds == 0 || EventLoop.now() < deadline {
      var entry = pollfd(fd: server.fileDescriptor, events: Int16(POLLIN), revents: 0)
      _ = poll(&entry, 1, 100)
      try echoRequests(server)
      try failures.printNew(server, every: failureReportPeriod)
      if stop.wait(milliseconds: 0) { break }
    }
    try failures.printNew(server)
    let s = try server.withHandlerAndWait { h, _ in h.statistics }
    print(
      "served \(s.repliesSent) requests, dropped \(s.repliesToStalledPeers) replies (requester not reading), "
        + "\(s.repliesToVanishedPeers) replies (requester gone), \(s.requestsOverTTL) requests (over the TTL), "
        + "\(server.statistics.pipeFailures) failed connections")
    fflush(nil)
  }
}

/// `userproto echo-client --dial tcp://127.0.0.1:5555 --data hello`
struct EchoClientCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "echo-client", abstract: "Send SP REQ (req0) requests and print the replies.")

  @Option(help: "Address to dial.") var dial: String = "tcp://127.0.0.1:5555"
  @Option(help: "Request body.") var data: String = "hello"
  @Option(help: "Number of requests.") var count: Int = 1
  @Option(help: "Resend a request after this many milliseconds without a reply (0: never).") var resendMs: Int = 60_000
  @Option(help: "Give up after this many seconds.") var timeout: Int = 10

  func validate() throws {
    try checkAddress("--dial", dial)
    try checkRange("--count", count, 1...Int(Int32.max))
    try checkRange("--resend-ms", resendMs, 0...maximumSeconds * 1000)
    try checkRange("--timeout", timeout, 1...maximumSeconds)
  }

  func run() throws {
    let url = try transportURL(dial)
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socket = try Socket(Req0Handler(resendInterval: .milliseconds(resendMs)), loop: loop)
    defer { socket.abort() }
    // Re-dialed until the socket closes; requests wait in the send queue
    // until a pipe is up.
    try socket.dial(url)
    let deadline = EventLoop.now() + UInt64(timeout) * 1_000_000_000
    for _ in 0..<count {
      guard try socket.trySend(Array(data.utf8)) else { throw CommandFailure("send would block") }
      var reply: [UInt8]?
      while reply == nil {
        guard EventLoop.now() < deadline else { throw CommandFailure("timed out waiting for a reply") }
        var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, 100)
        switch try socket.tryReceive() {
        case .message(let m): reply = m
        case .endOfStream: throw CommandFailure("the socket failed")
        case .wouldBlock: break
        }
      }
      print(String(decoding: reply!, as: UTF8.self))
    }
  }
}

/// `userproto pub --listen tcp://127.0.0.1:5556 --data "news: hi" --count 10`
struct PubCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pub", abstract: "Publish SP PUB (pub0) messages to every subscriber.")

  @Option(help: "Address to listen on.") var listen: String = "tcp://127.0.0.1:5556"
  @Option(help: "Message to publish (repeatable; published in turn).") var data: [String] = ["news: hello"]
  @Option(help: "Messages to publish (0: until SIGINT or SIGTERM).") var count: Int = 0
  @Option(help: "Milliseconds between messages.") var intervalMs: Int = 100

  func validate() throws {
    try checkAddress("--listen", listen)
    try checkRange("--count", count, 0...Int(Int32.max))
    try checkRange("--interval-ms", intervalMs, 0...maximumSeconds * 1000)
    if data.isEmpty { throw ValidationError("--data: give at least one message") }
  }

  func run() throws {
    let url = try transportURL(listen)
    let stop = StopSignals()
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let publisher = try Socket(Pub0Handler(), loop: loop)
    defer { try? publisher.close() }
    let bound = try publisher.listen(url)
    print("publishing on \(bound)")
    fflush(nil)
    var i = 0
    var failures = PipeFailureReport()
    while count == 0 || i < count {
      // PUB never waits: the handler takes each message at once (dropping
      // copies for subscribers that stopped reading).
      try publisher.trySend(Array(data[i % data.count].utf8))
      i += 1
      let stopping = stop.wait(milliseconds: intervalMs)
      try failures.printNew(publisher, every: failureReportPeriod)
      if stopping { break }
    }
    try failures.printNew(publisher)
    let s = try publisher.withHandlerAndWait { h, _ in h.statistics }
    print(
      "published \(s.published), delivered \(s.delivered) copies, dropped \(s.drops), "
        + "\(publisher.statistics.pipeFailures) failed connections")
    fflush(nil)
  }
}

/// `userproto sub --dial tcp://127.0.0.1:5556 --subscribe news --count 3`
struct SubCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sub", abstract: "Subscribe with SP SUB (sub0) and print matching messages.")

  @Option(help: "Address to dial.") var dial: String = "tcp://127.0.0.1:5556"
  @Option(help: "Topic prefix (repeatable; none: everything).") var subscribe: [String] = []
  @Option(help: "Stop after this many messages.") var count: Int = 1
  @Option(help: "Give up after this many seconds.") var timeout: Int = 10

  func validate() throws {
    try checkAddress("--dial", dial)
    try checkRange("--count", count, 1...Int(Int32.max))
    try checkRange("--timeout", timeout, 1...maximumSeconds)
  }

  func run() throws {
    let url = try transportURL(dial)
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let topics = subscribe.isEmpty ? [""] : subscribe
    let socket = try Socket(Sub0Handler(subscriptions: topics.map { Array($0.utf8) }), loop: loop)
    defer { socket.abort() }
    try socket.dial(url)
    let deadline = EventLoop.now() + UInt64(timeout) * 1_000_000_000
    var received = 0
    while received < count {
      guard EventLoop.now() < deadline else { throw CommandFailure("timed out after \(received) messages") }
      var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
      _ = poll(&entry, 1, 100)
      switch try socket.tryReceive() {
      case .message(let m):
        print(String(decoding: m, as: UTF8.self))
        fflush(nil)
        received += 1
      case .endOfStream: throw CommandFailure("the socket failed")
      case .wouldBlock: break
      }
    }
  }
}

/// A command that ran and failed (exit 1, not a usage error).
struct CommandFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// The longest time any option may ask for (about 31 years), so that
/// nanosecond arithmetic cannot overflow.
let maximumSeconds = 1_000_000_000

/// Refuses a value outside `range` with a message naming the option.
func checkRange(_ option: String, _ value: Int, _ range: ClosedRange<Int>) throws {
  guard range.contains(value) else {
    throw ValidationError("\(option) must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
  }
}

/// Refuses an address that does not parse (or resolve), naming the option.
func checkAddress(_ option: String, _ url: String) throws {
  do {
    _ = try SPAddress.parse(url)
  } catch {
    throw ValidationError("\(option): \(error)")
  }
}

/// SIGINT and SIGTERM as a request to stop: a server prints its summary and
/// exits 0 instead of dying mid-line. Created before the event loop, so
/// that its thread inherits the blocked mask and every such signal stays
/// pending for `wait` (a signal delivered to an unblocking thread would kill
/// the process with its default action).
struct StopSignals {
  private var set = sigset_t()

  init() {
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    sigaddset(&set, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &set, nil)
  }

  /// Waits up to `milliseconds` (0: only checks); true when a stop signal
  /// arrived.
  func wait(milliseconds: Int) -> Bool {
    var set = self.set
    var timeout = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    let deadline = EventLoop.now() + UInt64(milliseconds) * 1_000_000
    while true {
      if sigtimedwait(&set, nil, &timeout) > 0 { return true }
      guard errno == EINTR else { return false }  // EAGAIN: the time is up
      let now = EventLoop.now()
      guard now < deadline else { return false }
      let left = Int(deadline - now)
      timeout = timespec(tv_sec: left / 1_000_000_000, tv_nsec: left % 1_000_000_000)
    }
  }
}

/// The second design's address for an SP URL the commands accept: parsed
/// by ``SPAddress`` (which ``checkAddress(_:_:)`` validated), so every form
/// and host name means what it did with the first design's sockets.
func transportURL(_ url: String) throws -> TransportURL {
  let address = try SPAddress.parse(url)
  return address.family == AF_UNIX ? .ipc(address) : .tcp(address)
}

/// How often a running command prints new pipe failures (nanoseconds).
let failureReportPeriod: UInt64 = 100_000_000

/// Answers the requests queued on `server` with their bodies, from the
/// calling thread: each reply is sent before the next request is received,
/// so it goes back to that request's requester (REP answers in order).
/// Returns after at most `limit` requests, so a busy server still gets to
/// its other work.
/// - Throws: what the socket's receive or send throws.
@discardableResult
func echoRequests(_ server: Rep0Socket, limit: Int = 256) throws -> Int {
  var answered = 0
  while answered < limit {
    switch try server.tryReceive() {
    case .message(let request):
      try sendWaiting(request, on: server)
      answered += 1
    case .wouldBlock:
      return answered
    case .endOfStream:
      throw CommandFailure("the echo server's socket failed")
    }
  }
  return answered
}

/// Sends `message`, waiting in poll(2) on the socket's fd while its send
/// queue is full. (A REP reply must not be skipped: the next one would go
/// to the wrong requester.)
func sendWaiting<Handler: SocketHandler>(_ message: [UInt8], on socket: Socket<Handler>) throws {
  while try !socket.trySend(message) {
    var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLOUT), revents: 0)
    _ = poll(&entry, 1, 100)
  }
}

/// An SP handler whose ``SPPipes`` layer records why pipes failed.
protocol SPPipesHandler: SocketHandler {
  var pipes: SPPipes { get }
}

extension Rep0Handler: SPPipesHandler {}
extension Pub0Handler: SPPipesHandler {}

/// How many pipes of a socket failed, and the last reasons its SP layer kept.
struct PipeFailures: Sendable {
  var count: Int
  var recentReasons: [String]
}

/// Prints a socket's pipe failures as they happen: one line per failure
/// (`connection failed: pipe N (URL, peer ADDRESS): REASON`), counted by
/// ``SocketStatistics/pipeFailures``, with the reason the SP layer recorded
/// (it keeps the last 32; older ones are summed up in one line).
struct PipeFailureReport {
  /// Failures printed so far.
  private(set) var reported = 0
  private var nextReport: UInt64 = 0

  /// Prints the failures since the last call; with a `period`, only if that
  /// long has passed since the last report.
  mutating func printNew<Handler: SPPipesHandler>(_ socket: Socket<Handler>, every period: UInt64 = 0) throws {
    let now = EventLoop.now()
    guard now >= nextReport else { return }
    nextReport = now + period
    let failures = try socket.withHandlerAndWait { h, context in
      PipeFailures(count: context.statistics.pipeFailures, recentReasons: h.pipes.recentFailures)
    }
    let new = failures.count - reported
    guard new > 0 else { return }
    let reasons = failures.recentReasons.suffix(new)
    if new > reasons.count { print("(\(new - reasons.count) more failed connections, reasons not kept)") }
    for reason in reasons { print("connection failed: \(reason)") }
    fflush(nil)
    reported = failures.count
  }
}
