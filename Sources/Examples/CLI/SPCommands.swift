import ArgumentParser
import ExampleProtocols
import Glibc
import Locking
import Logging
import ServiceLifecycle
import UserProto
import UserProtoLifecycle

/// `userproto echo-server --listen tcp://127.0.0.1:5555`
///
/// One REP socket (`Socket<Rep0Handler>`) listening: it serves every
/// requester that connects. The command is three ServiceLifecycle services
/// in one `ServiceGroup`: the event loop, the socket, and the echo work
/// (``EchoService``), which receives each request and sends its body back
/// before taking the next, so each reply goes to the requester of the
/// request just received. SIGINT or SIGTERM (or the end of `--seconds`)
/// shuts them down in reverse order: the echo work prints its summary, the
/// socket closes gracefully (replies already queued go out), the loop stops.
struct EchoServerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "echo-server", abstract: "Serve SP REP (rep0): reply to each request with its body.")

  @Option(help: "Address to listen on, e.g. tcp://127.0.0.1:5555.")
  var listen: String = "tcp://127.0.0.1:5555"
  @Option(help: "Stop after this many seconds (0: until SIGINT or SIGTERM).")
  var seconds: Int = 0
  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    try checkAddress("--listen", listen)
    try checkRange("--seconds", seconds, 0...maximumSeconds)
  }

  func run() async throws {
    let url = try transportURL(listen)
    let logger = logging.logger(label: "userproto.echo-server")
    let loop = try EventLoop(logger: logger)
    let server: Rep0Socket
    let bound: TransportURL
    do {
      server = try Socket(Rep0Handler(), loop: loop, logger: logger)
      do {
        bound = try server.listen(url)
      } catch {
        await server.abortAndWait()
        throw error
      }
    } catch {
      await loop.shutdown()
      throw error
    }
    let work = EchoService(
      server: server, seconds: seconds, banner: "echo server on \(bound) (loop: \(loop.backend))")
    try await runServices(loop: loop, socket: server, work: work, logger: logger)
  }
}

/// The echo server's work (see ``EchoServerCommand``): prints `banner`,
/// answers requests until graceful shutdown or the end of `seconds` (0: no
/// end), printing failed connections as they happen, then the summary.
///
/// The banner is printed here, not before the group runs: a `ServiceGroup`
/// traps its signals before it starts its services, so once the banner is
/// out a SIGTERM is a graceful shutdown, never the default action.
struct EchoService: Service {
  let server: Rep0Socket
  let seconds: Int
  let banner: String

  func run() async throws {
    print(banner)
    fflush(nil)
    let server = self.server
    let report = SharedFailureReport()
    try await cancelWhenGracefulShutdown {
      try await runUntilFirstEnds(seconds: seconds, reportingFailuresOf: server, into: report) {
        for try await request in server.messages { try await server.send(request) }
        throw CommandFailure("the echo server's socket failed")
      }
    }
    try await report.printNew(server)
    let s = try await server.withHandler { h, _ in h.statistics }
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
  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    try checkAddress("--dial", dial)
    try checkRange("--count", count, 1...Int(Int32.max))
    try checkRange("--resend-ms", resendMs, 0...maximumSeconds * 1000)
    try checkRange("--timeout", timeout, 1...maximumSeconds)
  }

  func run() throws {
    let url = try transportURL(dial)
    let logger = logging.logger(label: "userproto.echo-client")
    let loop = try EventLoop(logger: logger)
    defer { loop.shutdownAndWait() }
    let socket = try Socket(Req0Handler(resendInterval: .milliseconds(resendMs)), loop: loop, logger: logger)
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
///
/// A PUB socket listening, run as ``EchoServerCommand`` runs its socket:
/// the loop, the socket and the publishing (``PublishService``) as services
/// of one `ServiceGroup`, shut down in reverse order on SIGINT or SIGTERM
/// or once `--count` messages are out.
struct PubCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pub", abstract: "Publish SP PUB (pub0) messages to every subscriber.")

  @Option(help: "Address to listen on.") var listen: String = "tcp://127.0.0.1:5556"
  @Option(help: "Message to publish (repeatable; published in turn).") var data: [String] = ["news: hello"]
  @Option(help: "Messages to publish (0: until SIGINT or SIGTERM).") var count: Int = 0
  @Option(help: "Milliseconds between messages.") var intervalMs: Int = 100
  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    try checkAddress("--listen", listen)
    try checkRange("--count", count, 0...Int(Int32.max))
    try checkRange("--interval-ms", intervalMs, 0...maximumSeconds * 1000)
    if data.isEmpty { throw ValidationError("--data: give at least one message") }
  }

  func run() async throws {
    let url = try transportURL(listen)
    let logger = logging.logger(label: "userproto.pub")
    let loop = try EventLoop(logger: logger)
    let publisher: Pub0Socket
    let bound: TransportURL
    do {
      publisher = try Socket(Pub0Handler(), loop: loop, logger: logger)
      do {
        bound = try publisher.listen(url)
      } catch {
        await publisher.abortAndWait()
        throw error
      }
    } catch {
      await loop.shutdown()
      throw error
    }
    let work = PublishService(
      publisher: publisher, messages: data.map { Array($0.utf8) }, count: count, intervalMs: intervalMs,
      banner: "publishing on \(bound)")
    try await runServices(loop: loop, socket: publisher, work: work, logger: logger)
  }
}

/// The publishing of ``PubCommand``: prints `banner` (once the signals are
/// trapped, as ``EchoService``), then `count` messages (0: until graceful
/// shutdown), `intervalMs` apart, printing failed connections as they
/// happen, then the summary.
struct PublishService: Service {
  let publisher: Pub0Socket
  let messages: [[UInt8]]
  let count: Int
  let intervalMs: Int
  let banner: String

  func run() async throws {
    print(banner)
    fflush(nil)
    let publisher = self.publisher
    let messages = self.messages
    let count = self.count
    let interval = Duration.milliseconds(intervalMs)
    let report = SharedFailureReport()
    try await cancelWhenGracefulShutdown {
      try await runUntilFirstEnds(seconds: 0, reportingFailuresOf: publisher, into: report) {
        var i = 0
        while count == 0 || i < count {
          // PUB never waits: the handler takes each message at once
          // (dropping copies for subscribers that stopped reading).
          try publisher.trySend(messages[i % messages.count])
          i += 1
          if count == 0 || i < count { try await Task.sleep(for: interval) }
        }
      }
    }
    try await report.printNew(publisher)
    let s = try await publisher.withHandler { h, _ in h.statistics }
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
  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    try checkAddress("--dial", dial)
    try checkRange("--count", count, 1...Int(Int32.max))
    try checkRange("--timeout", timeout, 1...maximumSeconds)
  }

  func run() throws {
    let url = try transportURL(dial)
    let logger = logging.logger(label: "userproto.sub")
    let loop = try EventLoop(logger: logger)
    defer { loop.shutdownAndWait() }
    let topics = subscribe.isEmpty ? [""] : subscribe
    let socket = try Socket(
      Sub0Handler(subscriptions: topics.map { Array($0.utf8) }), loop: loop, logger: logger)
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
struct PipeFailureReport: Sendable {
  /// Failures printed so far.
  private(set) var reported = 0
  private var nextReport: UInt64 = 0

  /// Prints the failures since the last call; with a `period`, only if that
  /// long has passed since the last report.
  mutating func printNew<Handler: SPPipesHandler>(_ socket: Socket<Handler>, every period: UInt64 = 0) throws {
    guard due(every: period) else { return }
    print(try socket.withHandlerAndWait(Self.failures))
  }

  /// True (and the next report scheduled) when `period` has passed since
  /// the last report.
  mutating func due(every period: UInt64) -> Bool {
    let now = EventLoop.now()
    guard now >= nextReport else { return false }
    nextReport = now + period
    return true
  }

  /// What a socket's handler and context say about its failures (run on
  /// the loop).
  @Sendable static func failures<Handler: SPPipesHandler>(_ handler: Handler, _ context: SocketContext)
    -> PipeFailures
  {
    PipeFailures(count: context.statistics.pipeFailures, recentReasons: handler.pipes.recentFailures)
  }

  /// Prints the failures in `failures` not printed yet.
  mutating func print(_ failures: PipeFailures) {
    let new = failures.count - reported
    guard new > 0 else { return }
    let reasons = failures.recentReasons.suffix(new)
    if new > reasons.count { Swift.print("(\(new - reasons.count) more failed connections, reasons not kept)") }
    for reason in reasons { Swift.print("connection failed: \(reason)") }
    fflush(nil)
    reported = failures.count
  }
}

/// A ``PipeFailureReport`` shared by a command's tasks.
final class SharedFailureReport: Sendable {
  private let report = Lock(PipeFailureReport())

  /// The async ``PipeFailureReport/printNew(_:every:)``: asks the loop
  /// without blocking a thread.
  func printNew<Handler: SPPipesHandler>(_ socket: Socket<Handler>, every period: UInt64 = 0) async throws {
    guard report.withLock({ $0.due(every: period) }) else { return }
    let failures = try await socket.withHandler(PipeFailureReport.failures)
    report.withLock { $0.print(failures) }
  }
}

/// Runs a command's `work` beside a failure reporter (every
/// ``failureReportPeriod``) and, with `seconds` above 0, a deadline; returns
/// when `work` returns or the deadline passes, and throws what `work`
/// throws. Cancelled (by graceful shutdown), it returns quietly.
func runUntilFirstEnds<Handler: SPPipesHandler>(
  seconds: Int, reportingFailuresOf socket: Socket<Handler>, into report: SharedFailureReport,
  _ work: @escaping @Sendable () async throws -> Void
) async throws {
  do {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask(operation: work)
      group.addTask {
        while true {
          try await Task.sleep(for: .nanoseconds(Int64(failureReportPeriod)))
          try await report.printNew(socket, every: failureReportPeriod)
        }
      }
      if seconds > 0 { group.addTask { try await Task.sleep(for: .seconds(seconds)) } }
      try await group.next()
      group.cancelAll()
    }
  } catch is CancellationError {
    // Graceful shutdown cancelled the work.
  }
}

/// Runs a long-running command's services in one `ServiceGroup`: the
/// loop, then the socket, then the command's work, so SIGINT and SIGTERM
/// (and the work returning) shut them down in reverse order: the work
/// prints its summary, the socket closes gracefully, the loop stops.
func runServices<Handler: SocketHandler>(
  loop: EventLoop, socket: Socket<Handler>, work: some Service, logger: Logger
) async throws {
  let group = ServiceGroup(
    configuration: ServiceGroupConfiguration(
      services: [
        .init(service: loop, serviceName: "event loop"),
        .init(service: socket, serviceName: "socket"),
        .init(service: work, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "work"),
      ],
      gracefulShutdownSignals: [.sigterm, .sigint],
      logger: logger))
  try await group.run()
}
