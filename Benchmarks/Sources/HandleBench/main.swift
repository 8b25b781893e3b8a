// HandleBench: the second socket design (Socket<Handler>, pipes) against the
// first (ProtocolSocket subclasses), same framing, same loop, one run.
//
//   swift build -c release --package-path Benchmarks --product HandleBench
//   Benchmarks/.build/release/HandleBench [--quick] [--rounds N]
//
// Both sides use the same 4-byte big-endian length prefix. The old side is a
// ProtocolSocket subclass (received -> deliver, encode), the new side a
// SocketHandler (received parses the pipe's InboundBuffer in place, send
// frames and writes to the pipe). Servers answer on the loop in both.
//
// - app ping-pong 64 B: an application thread sends with trySend, waits in
//   poll(2) on the socket's fd, takes the reply with tryReceive (p50).
// - stream 64 B / 4 KiB: the application thread sends as fast as trySend
//   takes messages (poll for POLLOUT when it would block); the server counts
//   them on the loop; ns per message from the first send to the last arrival.
import BenchSupport
import Glibc
import LoopSupport
import UserProto

let arguments = BenchArguments()
let quick = arguments.quick
let rounds = arguments.int("--rounds", default: quick ? 2 : 5)
let trips = quick ? 3000 : 10000
func streamCount(_ size: Int) -> Int { size == 64 ? (quick ? 50000 : 200_000) : (quick ? 10000 : 40000) }

struct Stalled: Error, CustomStringConvertible { var description: String }

// MARK: The first design

final class OldFramed: ProtocolSocket, @unchecked Sendable {
  private var parser = FrameParser()
  override func received(_ bytes: [UInt8]) throws { try parser.append(bytes) { try deliver($0) } }
  override func encode(_ message: [UInt8]) throws -> [UInt8] { frame(message) }
}

final class OldServer: @unchecked Sendable {
  let listener: ProtocolListener<OldFramed>
  let sockets = LoopBox([OldFramed]())
  init(_ loop: UserProto.EventLoop, handler: @escaping @Sendable (ProtocolSocket, [UInt8]) -> Void) throws {
    let sockets = self.sockets
    listener = try ProtocolListener<OldFramed>(
      on: SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, queuesConnections: false
    ) { socket in
      sockets.value.append(socket)
      socket.handleMessagesOnLoop(handler)
    }
  }
  func close(_ loop: UserProto.EventLoop) throws {
    try listener.close()
    try onLoop(loop) {
      for socket in self.sockets.value { socket.abort() }
      self.sockets.value = []
    }
  }
}

// MARK: The second design

/// Length-prefixed messages on the new API (the client side).
final class FrameHandler: SocketHandler {
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let length = input.peekBigEndian(UInt32.self), input.readableBytes >= 4 + Int(length) {
      input.moveReaderIndex(forwardBy: 4)
      try context.deliver(input.readBytes(Int(length)) ?? [])
    }
  }
  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    guard let pipe = context.pipes.first, pipe.isWritable else { return .wait }
    try pipe.write(frame(message))
    return .taken
  }
}

/// Answers each frame on its pipe (echo), or only counts them.
final class FrameServerHandler: SocketHandler {
  static var sendsMessages: Bool { false }
  let echo: Bool
  let counted: (@Sendable () -> Void)?
  init(echo: Bool, counted: (@Sendable () -> Void)? = nil) {
    self.echo = echo
    self.counted = counted
  }
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let length = input.peekBigEndian(UInt32.self), input.readableBytes >= 4 + Int(length) {
      if echo {
        try pipe.write(input.readBytes(4 + Int(length)) ?? [])
      } else {
        input.moveReaderIndex(forwardBy: 4 + Int(length))
        counted?()
      }
    }
  }
}

// MARK: Tests

protocol AppSocket {
  var fd: Int32 { get }
  func send(_ m: [UInt8]) throws -> Bool
  func receiveOne() throws -> Bool  // true when a message was taken
  func abort()
}
struct OldApp: AppSocket {
  let s: OldFramed
  var fd: Int32 { s.fileDescriptor }
  func send(_ m: [UInt8]) throws -> Bool { try s.trySend(m) }
  func receiveOne() throws -> Bool {
    if case .message = try s.tryReceive() { return true }
    return false
  }
  func abort() { s.abort() }
}
struct NewApp: AppSocket {
  let s: Socket<FrameHandler>
  let fd: Int32
  init(_ s: Socket<FrameHandler>) {
    self.s = s
    fd = s.fileDescriptor
  }
  func send(_ m: [UInt8]) throws -> Bool { try s.trySend(m) }
  func receiveOne() throws -> Bool {
    if case .message = try s.tryReceive() { return true }
    return false
  }
  func abort() { s.abort() }
}

func pingPong(_ app: AppSocket, size: Int) throws -> Double {
  let payload = [UInt8](repeating: 0x33, count: size)
  let warmup = trips / 10
  var samples = Samples(reserving: trips)
  var descriptor = pollfd(fd: app.fd, events: Int16(POLLIN), revents: 0)
  for i in 0..<(trips + warmup) {
    let started = nowNanoseconds()
    while try !app.send(payload) { _ = poll(nil, 0, 1) }
    while try !app.receiveOne() {
      guard poll(&descriptor, 1, 60_000) == 1 else { throw Stalled(description: "ping-pong: no reply in 60 s") }
    }
    if i >= warmup { samples.add(nowNanoseconds() - started) }
  }
  return samples.p50p99.0
}

func stream(_ app: AppSocket, size: Int, count: Int, received: @escaping () -> Int) throws -> Double {
  let payload = [UInt8](repeating: 0x44, count: size)
  var descriptor = pollfd(fd: app.fd, events: Int16(POLLOUT), revents: 0)
  let started = nowNanoseconds()
  var sent = 0
  while sent < count {
    if try app.send(payload) { sent += 1 } else { _ = poll(&descriptor, 1, 60_000) }
  }
  let deadline = nowNanoseconds() + 60_000_000_000
  while received() < count {
    guard nowNanoseconds() < deadline else { throw Stalled(description: "stream: \(received()) of \(count)") }
    usleep(50)
  }
  return Double(nowNanoseconds() - started) / Double(count)
}

let counter = LoopBox(0)
func oldRun(_ loop: UserProto.EventLoop, test: String, size: Int) throws -> Double {
  counter.value = 0
  let echo = test == "ping"
  let server = try OldServer(loop) { socket, message in
    if echo { _ = try? socket.trySend(message) } else { counter.value += 1 }
  }
  let client = try OldFramed.connect(to: server.listener.localAddress, loop: loop)
  let app = OldApp(s: client)
  defer {
    app.abort()
    try? server.close(loop)
  }
  if echo { return try pingPong(app, size: size) }
  return try stream(app, size: size, count: streamCount(size)) { (try? onLoop(loop) { counter.value }) ?? 0 }
}

func newRun(_ loop: UserProto.EventLoop, test: String, size: Int) throws -> Double {
  counter.value = 0
  let echo = test == "ping"
  let box = counter
  let server = try Socket(FrameServerHandler(echo: echo, counted: { box.value += 1 }), loop: loop)
  let url = try server.listen("tcp://127.0.0.1:0")
  let client = try Socket(FrameHandler(), loop: loop)
  try client.dial(url)
  let app = NewApp(client)
  defer {
    app.abort()
    server.abort()
  }
  if echo { return try pingPong(app, size: size) }
  return try stream(app, size: size, count: streamCount(size)) { (try? onLoop(loop) { counter.value }) ?? 0 }
}

// MARK: The run

let loops = [
  ("io_uring", try makePinnedLoop(.ioUring, cpu: onlineCPUs >= 2 ? 1 : nil, name: "handle-uring")),
  ("epoll", try makePinnedLoop(.epoll, cpu: onlineCPUs >= 2 ? 1 : nil, name: "handle-epoll")),
]
if onlineCPUs >= 2 { pinCurrentThread(toCPU: 0) }
let tests: [(name: String, test: String, size: Int)] = [
  ("app ping-pong 64 B p50", "ping", 64), ("stream 64 B", "stream", 64), ("stream 4 KiB", "stream", 4096),
]
var old = [[[Double]]](repeating: [[Double]](repeating: [], count: tests.count), count: loops.count)
var new = old
let started = nowNanoseconds()
for round in 0..<rounds {
  for (b, (_, loop)) in loops.enumerated() {
    for (t, test) in tests.enumerated() {
      // Alternate which design goes first, so drift hits both alike.
      if round % 2 == 0 {
        old[b][t].append(try oldRun(loop, test: test.test, size: test.size))
        new[b][t].append(try newRun(loop, test: test.test, size: test.size))
      } else {
        new[b][t].append(try newRun(loop, test: test.test, size: test.size))
        old[b][t].append(try oldRun(loop, test: test.test, size: test.size))
      }
    }
  }
}
let elapsed = Double(nowNanoseconds() - started) / 1e9
print("# HandleBench")
print("")
print(
  "\(machineSummary()); \(quick ? "quick" : "full") run: \(rounds) rounds, designs alternating; TCP loopback; "
    + "application thread on CPU 0, loop on CPU 1; medians over rounds; \(fixed(elapsed, 0)) s.")
print("")
var rows: [[String]] = []
for (b, (name, _)) in loops.enumerated() {
  for (t, test) in tests.enumerated() {
    let o = median(old[b][t])
    let n = median(new[b][t])
    let unit = test.test == "ping" ? us(o) + " us" : fixed(o, 0) + " ns/msg"
    let unitN = test.test == "ping" ? us(n) + " us" : fixed(n, 0) + " ns/msg"
    let spread =
      "old \(old[b][t].map { fixed($0, 0) }.joined(separator: " ")) | new \(new[b][t].map { fixed($0, 0) }.joined(separator: " "))"
    rows.append([name, test.name, unit, unitN, ratio(n / o), spread])
  }
}
printTable(["backend", "test", "ProtocolSocket", "Socket<Handler>", "new / old", "per round (ns)"], rows)
for (_, loop) in loops { loop.shutdownAndWait() }
