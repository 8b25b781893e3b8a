// LoopBench: the event loop alone, io_uring backend against epoll backend in
// the same run, rounds interleaved between the backends, medians reported.
//
//   swift build -c release --package-path Benchmarks
//   Benchmarks/.build/release/LoopBench [--quick] [--rounds N] [--placement apart|free]
//   Benchmarks/.build/release/LoopBench --cancel-scaling   (only: cost of cancel vs fds registered)
//
// (a) cross-thread wake: the main thread runs `loop.execute { semaphore.signal() }`
//     and waits for the semaphore; round-trip latency.
// (b) TCP ping-pong over loopback between two sockets driven by the loop's
//     receive/send operations: both ends on one loop, and one loop per end;
//     round-trip p50/p99 for 64 B and 4 KiB.
// (c) throughput: 16 connections ping-ponging 64 B concurrently, round trips/s.
//
// Placement "apart" (default) pins the main thread and the first end's loop
// of a two-loop test to CPU 0, and every other loop to CPU 1; "free" pins
// nothing. On a 2-vCPU VM unpinned results are bimodal (threads that share a
// CPU ping-pong 3-4x faster than threads that wake each other across CPUs).
import BenchSupport
import Dispatch
import Glibc
import LoopSupport
import UserProto

let arguments = BenchArguments()
let quick = arguments.quick
let rounds = arguments.int("--rounds", default: quick ? 2 : 5)
let wakeTrips = quick ? 3000 : 10000
let pingTrips = quick ? 3000 : 10000
let throughputSeconds = quick ? 0.3 : 1.0
let connections = 16
let pinned = (arguments.string("--placement") ?? "apart") != "free" && onlineCPUs >= 2
let cpuA: Int? = pinned ? 0 : nil
let cpuB: Int? = pinned ? 1 : nil
if pinned { pinCurrentThread(toCPU: 0) }

// MARK: (a) cross-thread wake

func wake(_ loop: UserProto.EventLoop, trips: Int) throws -> Samples {
  let semaphore = DispatchSemaphore(value: 0)
  var samples = Samples(reserving: trips)
  for i in 0..<(trips + trips / 10) {
    let start = nowNanoseconds()
    try loop.execute { semaphore.signal() }
    semaphore.wait()
    if i >= trips / 10 { samples.add(nowNanoseconds() - start) }
  }
  return samples
}

/// The machine's own cross-thread wake: a plain thread (pinned like the
/// loops) answering semaphore pings, no loop involved.
final class SemaphoreEcho: @unchecked Sendable {
  let ping = DispatchSemaphore(value: 0)
  let pong = DispatchSemaphore(value: 0)
  var stop = false
  init(cpu: Int?) {
    detachThread { [self] in
      if let cpu { pinCurrentThread(toCPU: cpu) }
      while true {
        ping.wait()
        if stop { break }
        pong.signal()
      }
    }
  }
  func trip() {
    ping.signal()
    pong.wait()
  }
  func finish() {
    stop = true
    ping.signal()
  }
}

func semaphoreBaseline(trips: Int) -> Samples {
  let echo = SemaphoreEcho(cpu: cpuB)
  var samples = Samples(reserving: trips)
  for i in 0..<(trips + trips / 10) {
    let start = nowNanoseconds()
    echo.trip()
    if i >= trips / 10 { samples.add(nowNanoseconds() - start) }
  }
  echo.finish()
  return samples
}

// MARK: (b) ping-pong

/// One ping-pong connection: `a` sends `size` bytes, `b` echoes them, `a`
/// records the round trip and sends again.
final class PingPong: @unchecked Sendable {
  let a: LoopStream
  let b: LoopStream
  let message: [UInt8]
  var received = 0
  var started: UInt64 = 0
  var samples: Samples?
  var tripsLeft = Int.max
  var trips = 0
  var stopping = false
  var onFinished: (() -> Void)?

  init(loopA: UserProto.EventLoop, loopB: UserProto.EventLoop, size: Int) {
    let (fdA, fdB) = Loopback.pair()
    a = LoopStream(loop: loopA, fd: fdA)
    b = LoopStream(loop: loopB, fd: fdB)
    message = [UInt8](repeating: 0x5a, count: size)
  }

  /// Starts the echoing end. On loop B.
  func startEcho() throws {
    b.onBytes = { [b] bytes in b.write(bytes) }
    try b.start()
  }

  /// Starts the pinging end. On loop A.
  func startPing() throws {
    a.onBytes = { [self] bytes in
      received += bytes.count
      guard received >= message.count else { return }
      received -= message.count
      let now = nowNanoseconds()
      samples?.add(now - started)
      trips += 1
      tripsLeft -= 1
      if tripsLeft <= 0 || stopping {
        onFinished?()
        return
      }
      started = now
      a.write(message)
    }
    try a.start()
    started = nowNanoseconds()
    a.write(message)
  }
}

// MARK: (c) throughput

func throughput(loopA: UserProto.EventLoop, loopB: UserProto.EventLoop, size: Int, seconds: Double) throws -> Double {
  let all = (0..<connections).map { _ in PingPong(loopA: loopA, loopB: loopB, size: size) }
  let finished = Latch(count: connections)
  try onLoop(loopB) { for c in all { try c.startEcho() } }
  try onLoop(loopA) {
    for c in all {
      c.onFinished = { finished.countDown() }
      try c.startPing()
    }
  }
  func count() throws -> (Int, UInt64) {
    try onLoop(loopA) { (all.reduce(0) { $0 + $1.trips }, nowNanoseconds()) }
  }
  usleep(UInt32(min(seconds, 0.3) * 1e6))  // warm-up
  let (c0, t0) = try count()
  usleep(UInt32(seconds * 1e6))
  let (c1, t1) = try count()
  try onLoop(loopA) { for c in all { c.stopping = true } }
  finished.wait()
  try onLoop(loopA) { for c in all { c.a.close() } }
  try onLoop(loopB) { for c in all { c.b.close() } }
  return Double(c1 - c0) / (Double(t1 - t0) / 1e9)
}

/// Round-trip latencies of one ping-pong connection (after a 10% warm-up).
func pingPongSamples(loopA: UserProto.EventLoop, loopB: UserProto.EventLoop, size: Int, trips: Int) throws -> Samples {
  let connection = PingPong(loopA: loopA, loopB: loopB, size: size)
  connection.samples = Samples(reserving: trips + trips / 10)
  let done = Latch()
  let warmup = trips / 10
  try onLoop(loopB) { try connection.startEcho() }
  try onLoop(loopA) {
    connection.tripsLeft = trips + warmup
    connection.onFinished = { done.countDown() }
    try connection.startPing()
  }
  done.wait()
  let samples = try onLoop(loopA) { () -> Samples in
    var all = connection.samples!
    all.values.removeFirst(min(warmup, all.values.count))
    connection.a.close()
    return all
  }
  try onLoop(loopB) { connection.b.close() }
  return samples
}

// MARK: Extra: cost of cancel(_:) against the number of registered fds

/// `LoopBench --cancel-scaling`: arms a receive on each of `count` socket
/// pairs' first ends, then times cancelling them all; ns per cancel. Not part
/// of the default run (it needs 2 fds per pair).
func cancelCost(_ loop: UserProto.EventLoop, count: Int) throws -> Double {
  var pairs: [(Int32, Int32)] = []
  for _ in 0..<count {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
    pairs.append((fds[0], fds[1]))
  }
  let fds = pairs.map { $0.0 }
  let nanoseconds = try onLoop(loop) { () -> UInt64 in
    var handles: [IOHandle] = []
    for fd in fds { handles.append(try loop.receive(socket: fd) { _ in }) }
    let start = nowNanoseconds()
    for handle in handles { loop.cancel(handle) }
    return nowNanoseconds() - start
  }
  usleep(100_000)  // let the final completions drain
  for (a, b) in pairs {
    close(a)
    close(b)
  }
  return Double(nanoseconds) / Double(count)
}

if arguments.arguments.contains("--cancel-scaling") {
  let uring = try makePinnedLoop(.ioUring, cpu: cpuB, name: "cancel-uring")
  let epoll = try makePinnedLoop(.epoll, cpu: cpuB, name: "cancel-epoll")
  print("# LoopBench --cancel-scaling\n\n\(machineSummary()); median of 3 rounds.\n")
  var rows: [[String]] = []
  for count in [500, 1000, 2000, 4000] {
    var u: [Double] = []
    var e: [Double] = []
    for _ in 0..<3 {
      u.append(try cancelCost(uring, count: count))
      e.append(try cancelCost(epoll, count: count))
    }
    rows.append([String(count), fixed(median(u), 0), fixed(median(e), 0)])
  }
  printTable(["receives armed, then all cancelled", "io_uring ns per cancel", "epoll ns per cancel"], rows)
  uring.shutdownAndWait()
  epoll.shutdownAndWait()
  exit(0)
}

// MARK: The run

struct Metric {
  var name: String
  var unit: String
  /// true: smaller is better (latency).
  var lowerIsBetter: Bool
}

let metrics = [
  Metric(name: "(a) cross-thread wake, execute + reply, p50", unit: "us", lowerIsBetter: true),
  Metric(name: "(a) cross-thread wake, execute + reply, p99", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 64 B, one loop, p50", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 64 B, one loop, p99", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 4 KiB, one loop, p50", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 4 KiB, one loop, p99", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 64 B, loop per end, p50", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 64 B, loop per end, p99", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 4 KiB, loop per end, p50", unit: "us", lowerIsBetter: true),
  Metric(name: "(b) TCP ping-pong 4 KiB, loop per end, p99", unit: "us", lowerIsBetter: true),
  Metric(name: "(c) 16 connections 64 B, one loop", unit: "round trips/s", lowerIsBetter: false),
  Metric(name: "(c) 16 connections 64 B, loop per end", unit: "round trips/s", lowerIsBetter: false),
]

struct BackendLoops {
  var name: String
  var main: UserProto.EventLoop  // CPU 1: the one-loop tests and end B
  var peer: UserProto.EventLoop  // CPU 0: end A of the loop-per-end tests
}

var backends: [BackendLoops] = []
for (choice, name) in [(UserProto.EventLoop.BackendChoice.ioUring, "io_uring"), (.epoll, "epoll")] {
  let main = try makePinnedLoop(choice, cpu: cpuB, name: "\(name)-main")
  let peer = try makePinnedLoop(choice, cpu: cpuA, name: "\(name)-peer")
  precondition(main.backend.rawValue == name, "asked for \(name), got \(main.backend): \(main.backendReason)")
  backends.append(BackendLoops(name: name, main: main, peer: peer))
}

// values[backend][metric] = one value per round
var values = [[[Double]]](repeating: [[Double]](repeating: [], count: metrics.count), count: backends.count)
var baseline: [(Double, Double)] = []
let started = nowNanoseconds()
for round in 0..<rounds {
  baseline.append(semaphoreBaseline(trips: wakeTrips).p50p99)
  // Alternate which backend goes first, so drift affects both alike.
  let order = round % 2 == 0 ? Array(backends.indices) : Array(backends.indices.reversed())
  for b in order {
    let loops = backends[b]
    var row: [Double] = []
    let (w50, w99) = try wake(loops.main, trips: wakeTrips).p50p99
    row += [w50, w99]
    for size in [64, 4096] {
      let (p50, p99) = try pingPongSamples(loopA: loops.main, loopB: loops.main, size: size, trips: pingTrips).p50p99
      row += [p50, p99]
    }
    for size in [64, 4096] {
      let (p50, p99) = try pingPongSamples(loopA: loops.peer, loopB: loops.main, size: size, trips: pingTrips).p50p99
      row += [p50, p99]
    }
    row.append(try throughput(loopA: loops.main, loopB: loops.main, size: 64, seconds: throughputSeconds))
    row.append(try throughput(loopA: loops.peer, loopB: loops.main, size: 64, seconds: throughputSeconds))
    for (m, value) in row.enumerated() { values[b][m].append(value) }
  }
}
let elapsed = Double(nowNanoseconds() - started) / 1e9

// MARK: Report

print("# LoopBench")
print("")
print(
  "\(machineSummary()); \(quick ? "quick" : "full") run: \(rounds) rounds interleaved between backends, "
    + "\(wakeTrips) wakes, \(pingTrips) round trips per ping-pong, \(fixed(throughputSeconds, 1)) s per throughput test; "
    + "placement \(pinned ? "apart (main thread and end A on CPU 0, loops and end B on CPU 1)" : "free"); "
    + "medians over rounds of each round's p50/p99; \(fixed(elapsed, 0)) s.")
for loops in backends { print("- \(loops.name): \(loops.main.capabilities.joined(separator: "; "))") }
print("")
func show(_ m: Metric, _ v: Double) -> String { m.unit == "us" ? us(v, digits: 1) : rate(v) }
printTable(
  ["metric", "io_uring / epoll", "io_uring", "epoll", "unit", "better"],
  metrics.enumerated().map { (i, m) in
    let u = median(values[0][i])
    let e = median(values[1][i])
    return [m.name, ratio(u / e), show(m, u), show(m, e), m.unit, m.lowerIsBetter ? "lower" : "higher"]
  })
print(
  "Reference, no loop: a plain thread on the loops' CPU answering semaphore pings: p50 "
    + "\(us(median(baseline.map { $0.0 }))) us, p99 \(us(median(baseline.map { $0.1 }))) us.\n")
print("Per round (io_uring | epoll):")
for (i, m) in metrics.enumerated() {
  let u = values[0][i].map { show(m, $0) }.joined(separator: " ")
  let e = values[1][i].map { show(m, $0) }.joined(separator: " ")
  print("- \(m.name): \(u) | \(e)")
}
for loops in backends {
  loops.main.shutdownAndWait()
  loops.peer.shutdownAndWait()
}
