import ArgumentParser
import ExampleProtocols
import Glibc
import UserProto

/// `userproto echo-server --listen tcp://127.0.0.1:5555`
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
    let address = try SPAddress.parse(listen)
    let stop = StopSignals()
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try EchoServer(on: address, loop: loop)
    defer { server.close() }
    print("echo server on \(SPAddress.url(for: server.localAddress)) (loop: \(loop.backend))")
    fflush(nil)
    let deadline = EventLoop.now() + UInt64(seconds) * 1_000_000_000
    var reported = 0
    while seconds == 0 || EventLoop.now() < deadline {
      let stopping = stop.wait(milliseconds: 100)
      reported = printFailures(server.failures, after: reported)
      if stopping { break }
    }
    let s = server.statistics
    print(
      "served \(s.requestsServed) requests, dropped \(s.repliesDropped) replies (send queue full), "
        + "\(s.malformedRequests) malformed requests, \(server.failures.count) failed connections")
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
    let address = try SPAddress.parse(dial)
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socket = try ReqSocket.dial(address, loop: loop)
    socket.resendInterval = .milliseconds(resendMs)
    defer { socket.abort() }
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
        case .endOfStream: throw CommandFailure("the server closed the connection")
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
    let address = try SPAddress.parse(listen)
    let stop = StopSignals()
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let publisher = try Publisher(on: address, loop: loop)
    defer { publisher.close() }
    print("publishing on \(SPAddress.url(for: publisher.localAddress))")
    fflush(nil)
    var i = 0
    var reported = 0
    while count == 0 || i < count {
      _ = publisher.publish(data[i % data.count])
      i += 1
      let stopping = stop.wait(milliseconds: intervalMs)
      reported = printFailures(publisher.failures, after: reported)
      if stopping { break }
    }
    let s = publisher.statistics
    print(
      "published \(s.published), delivered \(s.delivered) copies, dropped \(s.dropped), "
        + "\(publisher.failures.count) failed connections")
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
    let address = try SPAddress.parse(dial)
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socket = try SubSocket.dial(address, loop: loop)
    defer { socket.abort() }
    if subscribe.isEmpty { socket.subscribe("") }
    for topic in subscribe { socket.subscribe(topic) }
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
      case .endOfStream: throw CommandFailure("the publisher closed the connection")
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
/// exits 0 instead of dying mid-line. Created before the event loop, so that
/// its thread inherits the blocked mask and every such signal stays pending
/// for `wait` (a signal delivered to an unblocking thread would kill the
/// process with its default action).
struct StopSignals {
  private var set = sigset_t()

  init() {
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    sigaddset(&set, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &set, nil)
  }

  /// Waits up to `milliseconds`; true when a stop signal arrived.
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

/// Prints the failures recorded after the first `seen`; returns the new count.
func printFailures(_ log: FailureLog, after seen: Int) -> Int {
  let new = log.failures(after: seen)
  if new.forgotten > 0 { print("(\(new.forgotten) more failed connections, reasons not kept)") }
  for reason in new.reasons { print("connection failed: \(reason)") }
  if new.count > seen { fflush(nil) }
  return new.count
}
