// SocketOverhead: what the ProtocolSocket layer adds per message over the raw
// loop transport, on the same loop, under both loop backends, in one run.
//
//   swift build -c release --package-path Benchmarks
//   Benchmarks/.build/release/SocketOverhead [--quick] [--rounds N] [--placement apart|free]
//
// Both sides frame messages the same way (4-byte big-endian length prefix,
// the same parser, one copy to frame a message), so only the layer differs:
//
// - raw: LoopStream (loop.receive multishot + one loop.send in flight,
//   coalescing queued bytes up to 256 KiB, as the library's stream transport).
// - ProtocolSocket: a FramedSocket subclass (received -> deliver, encode),
//   messages handled on the loop with handleMessagesOnLoop, sent with
//   trySend; the streaming sender waits for writability with loop.watch on
//   the socket's mask fd.
//
// Tests: ping-pong round trips (both ends on one loop) and one-way
// streaming, 64 B and 64 KiB messages. A last row runs the ping-pong from an
// application thread (poll(2) on the mask fd, tryReceive, trySend) against
// a server answering on the loop.
import BenchSupport
import Glibc
import LoopSupport
import UserProto

let arguments = BenchArguments()
let quick = arguments.quick
let rounds = arguments.int("--rounds", default: quick ? 2 : 5)
let pinned = (arguments.string("--placement") ?? "apart") != "free" && onlineCPUs >= 2
if pinned { pinCurrentThread(toCPU: 0) }

// Investigation filters: --only ping|stream|app runs one kind of test,
// --size 64|65536 one size (the tables then show "-" for what did not run).
let only = arguments.string("--only")
let sizes = arguments.string("--size").flatMap { Int($0) }.map { [$0] } ?? [64, 64 * 1024]
func wanted(_ kind: String) -> Bool { only == nil || only == kind }

let smallSize = 64
let largeSize = 64 * 1024
func pingTrips(_ size: Int) -> Int { size == smallSize ? (quick ? 3000 : 10000) : (quick ? 1000 : 3000) }
func streamCount(_ size: Int) -> Int { size == smallSize ? (quick ? 50000 : 200_000) : (quick ? 1000 : 4000) }

/// Length-prefixed framing on ProtocolSocket, with the same parser as the raw side.
final class FramedSocket: ProtocolSocket, @unchecked Sendable {
  private var parser = FrameParser()

  override func received(_ bytes: [UInt8]) throws {
    try parser.append(bytes) { try deliver($0) }
  }

  override func encode(_ message: [UInt8]) throws -> [UInt8] { frame(message) }
}

struct Stalled: Error, CustomStringConvertible {
  var description: String
}

// MARK: Raw loop transport

func rawPingPong(_ loop: UserProto.EventLoop, size: Int, trips: Int) throws -> Samples {
  let (fdA, fdB) = Loopback.pair()
  let payload = [UInt8](repeating: 0x33, count: size)
  let warmup = trips / 10
  let state = LoopBox((samples: Samples(reserving: trips + warmup), left: trips + warmup, started: UInt64(0)))
  let done = Latch()
  let (a, b) = try onLoop(loop) { () -> (LoopStream, LoopStream) in
    let a = LoopStream(loop: loop, fd: fdA)
    let b = LoopStream(loop: loop, fd: fdB)
    var parserA = FrameParser()
    var parserB = FrameParser()
    b.onBytes = { bytes in parserB.append(bytes) { b.write(frame($0)) } }
    a.onBytes = { bytes in
      parserA.append(bytes) { _ in
        let now = nowNanoseconds()
        state.value.samples.add(now - state.value.started)
        state.value.left -= 1
        if state.value.left == 0 { return done.countDown() }
        state.value.started = now
        a.write(frame(payload))
      }
    }
    try a.start()
    try b.start()
    state.value.started = nowNanoseconds()
    a.write(frame(payload))
    return (a, b)
  }
  guard done.wait(seconds: 60) else { throw Stalled(description: "raw ping-pong stalled") }
  return try onLoop(loop) {
    a.close()
    b.close()
    var samples = state.value.samples
    samples.values.removeFirst(warmup)
    return samples
  }
}

/// One-way streaming; returns ns per message.
func rawStream(_ loop: UserProto.EventLoop, size: Int, count: Int) throws -> Double {
  let (fdA, fdB) = Loopback.pair()
  let payload = [UInt8](repeating: 0x44, count: size)
  let state = LoopBox((sent: 0, received: 0, finished: UInt64(0)))
  let done = Latch()
  let high = 256 * 1024
  let low = 64 * 1024
  let started = nowNanoseconds()
  let (a, b) = try onLoop(loop) { () -> (LoopStream, LoopStream) in
    let a = LoopStream(loop: loop, fd: fdA)
    let b = LoopStream(loop: loop, fd: fdB)
    var parser = FrameParser()
    b.onBytes = { bytes in
      parser.append(bytes) { _ in
        state.value.received += 1
        if state.value.received == count {
          state.value.finished = nowNanoseconds()
          done.countDown()
        }
      }
    }
    func fill() {
      while state.value.sent < count && a.queuedBytes < high {
        a.write(frame(payload))
        state.value.sent += 1
      }
    }
    a.onSent = { if a.queuedBytes <= low { fill() } }
    try b.start()
    fill()
    return (a, b)
  }
  guard done.wait(seconds: 60) else { throw Stalled(description: "raw stream stalled") }
  return try onLoop(loop) {
    a.close()
    b.close()
    return Double(state.value.finished - started) / Double(count)
  }
}

// MARK: ProtocolSocket

/// A listener whose sockets run `handler` on the loop; keeps them alive.
final class Server: @unchecked Sendable {
  let listener: ProtocolListener<FramedSocket>
  let sockets = LoopBox([FramedSocket]())

  init(_ loop: UserProto.EventLoop, handler: @escaping @Sendable (ProtocolSocket, [UInt8]) -> Void) throws {
    let sockets = self.sockets
    listener = try ProtocolListener<FramedSocket>(
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

func socketPingPong(_ loop: UserProto.EventLoop, size: Int, trips: Int) throws -> Samples {
  let server = try Server(loop) { socket, message in _ = try? socket.trySend(message) }
  let payload = [UInt8](repeating: 0x33, count: size)
  let warmup = trips / 10
  let state = LoopBox((samples: Samples(reserving: trips + warmup), left: trips + warmup, started: UInt64(0)))
  let done = Latch()
  let client = try FramedSocket.connect(to: server.listener.localAddress, loop: loop)
  try onLoop(loop) {
    client.handleMessagesOnLoop { socket, _ in
      let now = nowNanoseconds()
      state.value.samples.add(now - state.value.started)
      state.value.left -= 1
      if state.value.left == 0 { return done.countDown() }
      state.value.started = now
      _ = try? socket.trySend(payload)
    }
    state.value.started = nowNanoseconds()
    _ = try client.trySend(payload)
  }
  guard done.wait(seconds: 60) else { throw Stalled(description: "ProtocolSocket ping-pong stalled") }
  client.abort()
  try server.close(loop)
  return try onLoop(loop) {
    var samples = state.value.samples
    samples.values.removeFirst(warmup)
    return samples
  }
}

func socketStream(_ loop: UserProto.EventLoop, size: Int, count: Int) throws -> Double {
  let state = LoopBox((sent: 0, received: 0, finished: UInt64(0), blocked: 0))
  let done = Latch()
  let server = try Server(loop) { _, _ in
    state.value.received += 1
    if state.value.received == count {
      state.value.finished = nowNanoseconds()
      done.countDown()
    }
  }
  let payload = [UInt8](repeating: 0x44, count: size)
  let client = try FramedSocket.connect(to: server.listener.localAddress, loop: loop)
  let started = nowNanoseconds()
  let watch = try onLoop(loop) { () -> IOHandle in
    func fill() {
      while state.value.sent < count {
        guard (try? client.trySend(payload)) == true else {
          state.value.blocked += 1
          return
        }
        state.value.sent += 1
      }
    }
    let handle = try loop.watch(fd: client.fileDescriptor, events: .writable) { _ in fill() }
    fill()
    return handle
  }
  guard done.wait(seconds: 60) else {
    let s = try onLoop(loop) { state.value }
    throw Stalled(
      description: "ProtocolSocket stream stalled: sent \(s.sent), received \(s.received) of \(count), "
        + "blocked \(s.blocked) times, readiness \(client.readiness)")
  }
  try onLoop(loop) { loop.cancel(watch) }
  client.abort()
  try server.close(loop)
  return try onLoop(loop) { Double(state.value.finished - started) / Double(count) }
}

/// Ping-pong from an application thread: poll(2) on the socket's mask fd,
/// tryReceive and trySend; the server answers on the loop.
func applicationPingPong(_ loop: UserProto.EventLoop, size: Int, trips: Int) throws -> Samples {
  let server = try Server(loop) { socket, message in _ = try? socket.trySend(message) }
  let client = try FramedSocket.connect(to: server.listener.localAddress, loop: loop)
  let payload = [UInt8](repeating: 0x33, count: size)
  let warmup = trips / 10
  var samples = Samples(reserving: trips)
  var descriptor = pollfd(fd: client.fileDescriptor, events: Int16(POLLIN), revents: 0)
  for i in 0..<(trips + warmup) {
    let started = nowNanoseconds()
    _ = try client.trySend(payload)
    var reply = false
    while !reply {
      switch try client.tryReceive() {
      case .message: reply = true
      case .wouldBlock: _ = poll(&descriptor, 1, 60_000)
      case .endOfStream: throw Stalled(description: "application ping-pong: connection ended")
      }
    }
    if i >= warmup { samples.add(nowNanoseconds() - started) }
  }
  client.abort()
  try server.close(loop)
  return samples
}

// MARK: The run

let loops = [
  ("io_uring", try makePinnedLoop(.ioUring, cpu: pinned ? 1 : nil, name: "overhead-uring")),
  ("epoll", try makePinnedLoop(.epoll, cpu: pinned ? 1 : nil, name: "overhead-epoll")),
]
/// --backend io_uring|epoll runs one backend only (for strace and perf).
let backendFilter = arguments.string("--backend")
for (name, loop) in loops { precondition(loop.backend.rawValue == name, "\(name): \(loop.backendReason)") }

struct Row {
  var name: String
  var unit: String
  var raw: [[Double]] = [[], []]  // per backend, per round
  var socket: [[Double]] = [[], []]
}
var pingRows = [smallSize, largeSize].map {
  Row(name: "ping-pong \($0 == smallSize ? "64 B" : "64 KiB") p50", unit: "us")
}
var ping99Rows = [smallSize, largeSize].map {
  Row(name: "ping-pong \($0 == smallSize ? "64 B" : "64 KiB") p99", unit: "us")
}
var streamRows = [smallSize, largeSize].map {
  Row(name: "stream \($0 == smallSize ? "64 B" : "64 KiB")", unit: "ns/msg")
}
var application: [[Double]] = [[], []]
let started = nowNanoseconds()
for round in 0..<rounds {
  let order = round % 2 == 0 ? [0, 1] : [1, 0]
  for b in order where backendFilter == nil || backendFilter == loops[b].0 {
    let loop = loops[b].1
    for (i, size) in [smallSize, largeSize].enumerated() where sizes.contains(size) {
      if wanted("ping") {
        let (r50, r99) = try rawPingPong(loop, size: size, trips: pingTrips(size)).p50p99
        let (s50, s99) = try socketPingPong(loop, size: size, trips: pingTrips(size)).p50p99
        pingRows[i].raw[b].append(r50)
        pingRows[i].socket[b].append(s50)
        ping99Rows[i].raw[b].append(r99)
        ping99Rows[i].socket[b].append(s99)
      }
      if wanted("stream") {
        streamRows[i].raw[b].append(try rawStream(loop, size: size, count: streamCount(size)))
        streamRows[i].socket[b].append(try socketStream(loop, size: size, count: streamCount(size)))
      }
    }
    if wanted("app") {
      application[b].append(try applicationPingPong(loop, size: smallSize, trips: pingTrips(smallSize)).p50p99.0)
    }
  }
}
let elapsed = Double(nowNanoseconds() - started) / 1e9

// MARK: Report

print("# SocketOverhead")
print("")
print(
  "\(machineSummary()); \(quick ? "quick" : "full") run: \(rounds) rounds interleaved between backends; "
    + "ping-pong \(pingTrips(smallSize)) (64 B) / \(pingTrips(largeSize)) (64 KiB) round trips, streams of "
    + "\(streamCount(smallSize)) / \(streamCount(largeSize)) messages; both ends on one loop"
    + "\(pinned ? " pinned to CPU 1 (application thread on CPU 0)" : ""); medians over rounds; \(fixed(elapsed, 0)) s.")
print("")
var table: [[String]] = []
for b in 0..<2 {
  for row in pingRows + ping99Rows + streamRows {
    let raw = median(row.raw[b])
    let socket = median(row.socket[b])
    let isStream = row.unit == "ns/msg"
    let size = row.name.contains("64 KiB") ? largeSize : smallSize
    func show(_ ns: Double) -> String { isStream ? fixed(ns, 0) + " ns" : us(ns) + " us" }
    let throughput = isStream ? " (\(rate(1e9 / socket)) msg/s, \(fixed(Double(size) / socket, 2)) GB/s)" : ""
    table.append([
      loops[b].0, row.name, ratio(socket / raw), (isStream ? fixed(socket - raw, 0) : us(socket - raw, digits: 2)),
      show(raw), show(socket) + throughput,
    ])
  }
}
printTable(
  ["backend", "test", "ProtocolSocket / raw", "added per message (ns or us)", "raw loop ops", "ProtocolSocket"], table)
print("Streams: ns per message from the first send to the last message received.")
print("")
printTable(
  ["backend", "ping-pong 64 B from an application thread (poll on the mask fd), p50", "vs ProtocolSocket on the loop"],
  (0..<2).map { b in
    [loops[b].0, us(median(application[b])) + " us", ratio(median(application[b]) / median(pingRows[0].socket[b]))]
  })
printTable(
  ["test", "io_uring / epoll, raw", "io_uring / epoll, ProtocolSocket"],
  (pingRows + ping99Rows + streamRows).map { row in
    [row.name, ratio(median(row.raw[0]) / median(row.raw[1])), ratio(median(row.socket[0]) / median(row.socket[1]))]
  } + [["application-thread ping-pong 64 B p50", "-", ratio(median(application[0]) / median(application[1]))]])
print("Per round (raw | ProtocolSocket):")
for b in 0..<2 {
  for row in pingRows + ping99Rows + streamRows {
    let f: (Double) -> String = row.unit == "us" ? { us($0) } : { fixed($0, 0) }
    print(
      "- \(loops[b].0) \(row.name): \(row.raw[b].map(f).joined(separator: " ")) | \(row.socket[b].map(f).joined(separator: " "))"
    )
  }
}
for (_, loop) in loops { loop.shutdownAndWait() }
