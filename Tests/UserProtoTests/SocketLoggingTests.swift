import Glibc
import Locking
import Logging
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

/// One line a ``CapturingLogHandler`` captured: the handler's metadata
/// (`socket.id`, `loop.name`) merged with the line's own.
struct CapturedLog: Sendable {
  var level: Logger.Level
  var message: String
  var metadata: Logger.Metadata

  /// A metadata value as text (nil when the key is missing).
  subscript(key: String) -> String? { metadata[key]?.description }
}

/// The lines captured by a handler and its copies, in order. Safe from any
/// thread: sockets log on their loop, the test reads on its own thread.
final class CapturedLogs: Sendable {
  private let entries = Lock<[CapturedLog]>([])

  func append(_ entry: CapturedLog) { entries.withLock { $0.append(entry) } }

  var all: [CapturedLog] { entries.withLock { $0 } }

  /// The lines whose message is `message`.
  func matching(_ message: String) -> [CapturedLog] { all.filter { $0.message == message } }

  /// A logger at `.trace` writing here.
  func logger() -> Logger {
    Logger(label: "userproto-test", factory: { _ in CapturingLogHandler(logs: self) })
  }
}

/// A log handler that keeps every line in memory, for the tests to read.
struct CapturingLogHandler: LogHandler {
  let logs: CapturedLogs
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .trace

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    var merged = metadata
    if let own = event.metadata { merged.merge(own, uniquingKeysWith: { _, line in line }) }
    logs.append(CapturedLog(level: event.level, message: event.message.description, metadata: merged))
  }
}

/// Lines as ``LineHandler`` frames them; a line reading "BAD" breaks the
/// protocol (the pipe fails with a protocol violation).
final class StrictLineHandler: SocketHandler {
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end) ?? []
      input.moveReaderIndex(forwardBy: 1)
      if line == Array("BAD".utf8) { throw .protocolViolation("a line reading BAD") }
      try context.deliver(line)
    }
  }
}

@Suite("Socket logging", .timeLimit(.minutes(2)), .testThreads)
struct SocketLoggingTests {
  @Test("a dialed pipe whose peer goes away logs its end, then the re-dial with its delay", arguments: loopBackends)
  func logsPeerLossAndRedial(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let logs = CapturedLogs()
    let policy = ReconnectPolicy(minimum: .milliseconds(20), maximum: .milliseconds(200))
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop, logger: logs.logger())
    defer { client.abort() }
    try client.dial(bound, reconnect: policy)
    #expect(eventually { client.pipeCount == 1 })
    #expect(try client.trySend(Array("one".utf8)))
    #expect(text(receiveSoon(client)) == "echo one")
    let socketID = "\(client.id)"
    let url = "\(bound)"

    let added = logs.matching("pipe added")
    #expect(added.count == 1)
    #expect(added.first?.level == Logger.Level.debug)
    #expect(added.first?["socket.id"] == socketID)
    #expect(added.first?["pipe.url"] == url)
    #expect(added.first?["pipe.dialed"] == "true")
    #expect(added.first?["pipe.peer"] != nil)

    // The peer goes away: the pipe goes (end of stream: removed; a reset:
    // failed), and the dialer schedules a re-dial after the minimum wait
    // (jittered down by at most a quarter).
    server.abort()
    #expect(eventually { client.pipeCount == 0 })
    #expect(eventually { !logs.matching("re-dial scheduled").isEmpty })
    let lines = logs.all
    let lossIndex = lines.firstIndex { $0.message == "pipe removed" || $0.message == "pipe failed" }
    let redialIndex = lines.firstIndex { $0.message == "re-dial scheduled" }
    guard let lossIndex, let redialIndex else {
      Issue.record("no pipe loss or no re-dial logged: \(lines.map(\.message))")
      return
    }
    #expect(lossIndex < redialIndex)
    let loss = lines[lossIndex]
    let lossLevel: Logger.Level = loss.message == "pipe failed" ? .notice : .debug
    #expect(loss.level == lossLevel)
    #expect(loss["socket.id"] == socketID)
    #expect(loss["pipe.url"] == url)
    #expect(loss["pipe.id"] == added.first?["pipe.id"])
    if loss.message == "pipe failed" { #expect(loss["error"] != nil) }
    let redial = lines[redialIndex]
    #expect(redial.level == Logger.Level.debug)
    #expect(redial["socket.id"] == socketID)
    #expect(redial["pipe.url"] == url)
    let delay = redial["redial.delay_ms"].flatMap { Double($0) } ?? -1
    #expect(delay >= 14.9 && delay <= 20.1, "re-dial after \(delay) ms")

    // Nobody listens now: the next attempts fail to connect (debug) and
    // each is re-dialed.
    #expect(eventually { logs.matching("re-dial scheduled").count >= 2 })
    #expect(logs.matching("socket closed").isEmpty)

    client.abort()
    #expect(eventually { logs.matching("socket closed").count == 1 })
    #expect(logs.matching("socket closed").first?["socket.id"] == socketID)
  }

  @Test("a peer that breaks the protocol: the pipe's failure is logged once, with the reason", arguments: loopBackends)
  func logsProtocolViolationOnce(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let logs = CapturedLogs()
    let server = try Socket(StrictLineHandler(), loop: loop, logger: logs.logger())
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    // The bad peer: it does not re-dial within the test.
    let peer = try Socket(LineHandler(), loop: loop)
    defer { peer.abort() }
    try peer.dial(bound, reconnect: ReconnectPolicy(minimum: .seconds(60)))
    #expect(eventually { server.pipeCount == 1 })
    #expect(try peer.trySend(Array("BAD".utf8)))
    #expect(eventually { server.statistics.pipeFailures == 1 })
    #expect(eventually { !logs.matching("pipe failed").isEmpty })
    usleep(100_000)  // a second line would come right after the first

    let violations = logs.all.filter { $0["error"]?.contains("protocol violation") == true }
    #expect(violations.count == 1, "\(violations.map(\.message))")
    let failure = violations.first
    #expect(failure?.message == "pipe failed")
    #expect(failure?.level == Logger.Level.notice)
    #expect(failure?["error"] == "\(SocketError.protocolViolation("a line reading BAD"))")
    #expect(failure?["socket.id"] == "\(server.id)")
    #expect(failure?["pipe.url"] == "\(bound)")
    #expect(failure?["pipe.dialed"] == "false")
    #expect(failure?["pipe.peer"] != nil)
    #expect(server.statistics.pipeFailures == 1)
  }

  @Test("a socket and a loop made without a logger log nothing, and work as before")
  func defaultLoggerLogsNothing() throws {
    // The shared default: a no-op handler whose level is above everything
    // the library logs, so a log site is one level check.
    #expect(DisabledLogger.shared.handler is SwiftLogNoOpLogHandler)
    #expect(DisabledLogger.shared.logLevel == Logger.Level.critical)
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    #expect(loop.logger.handler is SwiftLogNoOpLogHandler)
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let client = try Socket(LineHandler(), loop: loop, options: SocketOptions())
    defer { client.abort() }
    #expect(client.core.logger.handler is SwiftLogNoOpLogHandler)
    #expect(server.core.logger.handler is SwiftLogNoOpLogHandler)
    #expect(client.id != server.id)
    let bound = try server.listen("tcp://127.0.0.1:0")
    try client.dial(bound)
    #expect(try client.trySend(Array("one".utf8)))
    #expect(text(receiveSoon(client)) == "echo one")
    #expect(client.statistics.pipesAdded == 1)
  }

  @Test("a loop logs the engine it chose and why, once")
  func loopLogsItsEngine() throws {
    let logs = CapturedLogs()
    let loop = try EventLoop(configuration: .init(backend: .epoll, name: "logging-test"), logger: logs.logger())
    defer { loop.shutdownAndWait() }
    let started = logs.matching("event loop started")
    #expect(started.count == 1)
    #expect(started.first?.level == Logger.Level.info)
    #expect(started.first?["loop.name"] == "logging-test")
    #expect(started.first?["loop.backend"] == "epoll")
    #expect(started.first?["loop.backend_reason"] == loop.backendReason)
    #expect(logs.matching("io_uring refused; falling back to epoll").isEmpty)
  }

  @Test("a loop whose io_uring is refused logs the fallback to epoll (notice), then its engine")
  func loopLogsFallback() throws {
    let logs = CapturedLogs()
    var configuration = EventLoop.Configuration(backend: .automatic)
    configuration.faults = LoopFaults()
    configuration.faults?.inject(.uringSetup, EPERM, times: 2)
    configuration.honorsEnvironment = false
    let loop = try EventLoop(configuration: configuration, logger: logs.logger())
    defer { loop.shutdownAndWait() }
    #expect(loop.backend == .epoll)
    let fallback = logs.matching("io_uring refused; falling back to epoll")
    #expect(fallback.count == 1)
    #expect(fallback.first?.level == Logger.Level.notice)
    #expect(fallback.first?["loop.backend_reason"]?.contains("EPERM") == true)
    let started = logs.matching("event loop started")
    #expect(started.count == 1)
    #expect(started.first?["loop.backend"] == "epoll")
  }
}
