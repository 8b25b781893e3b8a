// PeerServers: our side of PeerBench (request/reply and pub/sub against NNG
// and raw C), one process per role so each one's CPU time can be read from
// /proc on its own. The clients that drive them are C programs in
// Benchmarks/c/peers (rr-client, sp-sub); `req-client` and `sub-client` are
// ours end to end, polled by fd the way an application would. Every socket
// is a `Socket<Handler>` with an SP handler from ExampleProtocols.
//
//   PeerServers echo-server [--backend auto|io_uring|epoll]
//       A REP socket (Rep0Handler) listening on 127.0.0.1; prints "PORT n".
//       The main thread polls its fd and sends each request's body back (a
//       REP's replies go in the order of its requests). The first design's
//       EchoServer answered on the loop thread instead, so this server's CPU
//       (every thread of the process) now includes an application thread:
//       results before this change (2026-12-04) measured the other shape.
//   PeerServers publisher --size B --seconds S --subscribers N [--drain S] [--backend ...]
//       A PUB socket (Pub0Handler); prints "PORT n", waits for N
//       subscribers' handshakes, publishes B-byte messages (u64 sequence
//       number first) as fast as trySend accepts them for S seconds (waiting
//       for POLLOUT when the send queue is full), waits --drain seconds,
//       prints its statistics and closes every subscriber.
//   PeerServers req-client --port P --connections N --size B --seconds S --warmup W --server-pid PID
//       N REQ sockets (Req0Handler), one request in flight each, all polled
//       by one application thread with epoll on their fds. Prints
//       rr-client's line.
//   PeerServers sub-client --port P --subscribers N --timeout S
//       N SUB sockets (Sub0Handler, subscribed to everything) polled by one
//       application thread with epoll. A subscriber ends when its pipe goes
//       (the publisher closed). Prints sp-sub's lines.
//
// Servers exit when their standard input (a pipe) closes.
import BenchSupport
import CUserProtoShim
import ExampleProtocols
import Glibc
import UserProto

let arguments = BenchArguments()
let role = arguments.arguments.dropFirst().first ?? ""

func makeLoop(_ name: String) throws -> UserProto.EventLoop {
  let choice: UserProto.EventLoop.BackendChoice =
    switch arguments.string("--backend") ?? "auto" {
    case "epoll": .epoll
    case "io_uring": .ioUring
    default: .automatic
    }
  let loop = try UserProto.EventLoop(configuration: .init(backend: choice, name: name))
  logLine("PeerServers \(role): loop backend \(loop.backend) (\(loop.backendReason))")
  return loop
}

/// Prints the port a socket listens on, for the driver.
func announce(_ bound: TransportURL) {
  var port: UInt16 = 0
  if case .tcp(let address) = bound { port = address.port ?? 0 }
  print("PORT \(port)")
  flushOutput()
}

func sleepSeconds(_ s: Double) {
  var t = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
  var rest = timespec()
  while nanosleep(&t, &rest) < 0 && errno == EINTR { t = rest }
}

/// A body of `size` bytes starting with `sequence` (u64 big-endian).
func message(_ template: [UInt8], _ sequence: UInt64) -> [UInt8] {
  var m = template
  m.withUnsafeMutableBytes { p in
    for i in 0..<8 { p[i] = UInt8(truncatingIfNeeded: sequence >> UInt64(56 - 8 * i)) }
  }
  return m
}

/// An epoll set over sockets' fds, each tagged with its index.
struct Poller {
  let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
  func add(_ fd: Int32, _ index: Int) {
    var ev = epoll_event()
    ev.events = EPOLLIN.rawValue
    ev.data.u64 = UInt64(index)
    precondition(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl: \(errno)")
  }
  func remove(_ fd: Int32) { _ = epoll_ctl(ep, EPOLL_CTL_DEL, fd, nil) }
  /// Indices of ready fds (level-triggered).
  func wait(_ events: inout [epoll_event], timeoutMs: Int32) -> [Int] {
    let n = epoll_wait(ep, &events, Int32(events.count), timeoutMs)
    return n <= 0 ? [] : (0..<Int(n)).map { Int(events[$0].data.u64) }
  }
}

switch role {
case "echo-server":
  exitWhenInputCloses()
  let loop = try makeLoop("echo-loop")
  let server = try Socket(Rep0Handler(), loop: loop)
  announce(try server.listen("tcp://127.0.0.1:0"))
  let fd = server.fileDescriptor
  // Replies that would have blocked, in order: sent before any new request
  // is taken, so each reply still answers its own request.
  var backlog: [[UInt8]] = []
  while true {
    var entry = pollfd(fd: fd, events: Int16(backlog.isEmpty ? POLLIN : POLLOUT), revents: 0)
    _ = poll(&entry, 1, -1)
    while let reply = backlog.first, try server.trySend(reply) { backlog.removeFirst() }
    guard backlog.isEmpty else { continue }
    while case .message(let request) = try server.tryReceive() {
      if try !server.trySend(request) {
        backlog.append(request)
        break
      }
    }
  }

case "publisher":
  exitWhenInputCloses()
  let size = max(8, arguments.int("--size", default: 64))
  let seconds = arguments.double("--seconds", default: 1)
  let wanted = arguments.int("--subscribers", default: 1)
  let drain = arguments.double("--drain", default: 1)
  let loop = try makeLoop("pub-loop")
  let publisher = try Socket(Pub0Handler(), loop: loop)
  announce(try publisher.listen("tcp://127.0.0.1:0"))
  // Subscribers whose SP handshake completed: only they receive.
  func subscribers() throws -> Int { try publisher.withHandlerAndWait { h, _ in h.pipes.ready.count } }
  let deadline = nowNanoseconds() + 30_000_000_000
  var connected = try subscribers()
  while connected < wanted {
    precondition(nowNanoseconds() < deadline, "only \(connected) of \(wanted) subscribers connected")
    sleepSeconds(0.001)
    connected = try subscribers()
  }
  let fd = publisher.fileDescriptor
  var template = [UInt8](repeating: 0, count: size)
  for i in 8..<size { template[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
  var published: UInt64 = 0
  let cpu0 = processCPUNanoseconds()
  let t0 = nowNanoseconds()
  let end = t0 + UInt64(seconds * 1e9)
  var t = t0
  while t < end {
    for _ in 0..<64 {
      if try publisher.trySend(message(template, published)) {
        published += 1
      } else {
        // The send queue is full (the loop has not taken it yet): wait
        // until it drains to its low watermark.
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&entry, 1, 100)
      }
    }
    t = nowNanoseconds()
  }
  let cpu1 = processCPUNanoseconds()
  sleepSeconds(drain)
  let (stats, dropsPerPipe, ready) = try publisher.withHandlerAndWait { h, _ in
    (h.statistics, h.dropsPerPipe, h.pipes.ready.map { $0.id })
  }
  print(
    "published=\(published) seconds=\(fixed(Double(t - t0) / 1e9, 3)) publisher_cpu_ns=\(cpu1 - cpu0) "
      + "delivered=\(stats.delivered) dropped=\(stats.drops) statistics_published=\(stats.published)")
  // Every subscriber was ready before the first message and stayed, so
  // each one got every message the handler published less its own drops.
  let perSubscriber = ready.map {
    (delivered: stats.published - (dropsPerPipe[$0] ?? 0), dropped: dropsPerPipe[$0] ?? 0)
  }
  for (i, s) in perSubscriber.sorted(by: { $0.delivered < $1.delivered }).enumerated() {
    print("pubsub \(i) delivered=\(s.delivered) dropped=\(s.dropped)")
  }
  flushOutput()
  try? publisher.close()
  sleepSeconds(0.1)
  exit(0)

case "req-client":
  let port = arguments.int("--port", default: 0)
  let connections = arguments.int("--connections", default: 1)
  let size = arguments.int("--size", default: 64)
  let seconds = arguments.double("--seconds", default: 1)
  let warmup = arguments.double("--warmup", default: 0.3)
  let serverPID = arguments.int("--server-pid", default: 0)
  let loop = try makeLoop("req-loop")
  let sockets = try (0..<connections).map { _ -> Req0Socket in
    let socket = try Socket(Req0Handler(), loop: loop)
    try socket.dial("tcp://127.0.0.1:\(port)")
    return socket
  }
  let poller = Poller()
  for (i, s) in sockets.enumerated() { poller.add(s.fileDescriptor, i) }
  var body = [UInt8](repeating: 0, count: size)
  for i in 0..<size { body[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
  var started = [UInt64](repeating: 0, count: connections)
  var samples = Samples(reserving: 1 << 20)
  var events = [epoll_event](repeating: epoll_event(), count: 64)
  func send(_ i: Int) {
    started[i] = nowNanoseconds()
    precondition((try? sockets[i].trySend(body)) == true, "trySend would block")
  }
  // The first requests wait in the send queues until the pipes are up (the
  // warm-up leaves them out of the samples).
  for i in 0..<connections { send(i) }
  let t0 = nowNanoseconds()
  let measureStart = t0 + UInt64(warmup * 1e9)
  let measureEnd = measureStart + UInt64(seconds * 1e9)
  var cpu0: UInt64 = 0
  var cpuStarted = false
  while true {
    let now = nowNanoseconds()
    if !cpuStarted && now >= measureStart {
      cpu0 = serverCPU(serverPID)
      cpuStarted = true
    }
    if now >= measureEnd { break }
    for i in poller.wait(&events, timeoutMs: 100) {
      while case .message(let reply) = try sockets[i].tryReceive() {
        let t = nowNanoseconds()
        precondition(reply == body, "the reply differs from the request")
        if started[i] >= measureStart && t <= measureEnd { samples.add(t - started[i]) }
        send(i)
      }
    }
  }
  let cpu1 = serverCPU(serverPID)
  let (p50, p99) = samples.p50p99
  let trips = samples.values.count
  print(
    "trips=\(trips) seconds=\(fixed(seconds, 3)) rate=\(fixed(Double(trips) / seconds, 1)) "
      + "p50_us=\(fixed(p50 / 1000, 2)) p99_us=\(fixed(p99 / 1000, 2)) server_cpu_ns=\(cpu1 - cpu0) "
      + "cpu_us_per_trip=\(fixed(Double(cpu1 - cpu0) / 1000 / Double(max(trips, 1)), 3)) "
      + "server_threads=\(threadCount(serverPID))")
  flushOutput()
  for s in sockets { s.abort() }
  exit(0)

case "sub-client":
  let port = arguments.int("--port", default: 0)
  let count = arguments.int("--subscribers", default: 1)
  let timeout = arguments.double("--timeout", default: 30)
  let loop = try makeLoop("sub-loop")
  let sockets = try (0..<count).map { _ -> Sub0Socket in
    let socket = try Socket(Sub0Handler(subscriptions: [[]]), loop: loop)
    try socket.dial("tcp://127.0.0.1:\(port)")
    return socket
  }
  let connectDeadline = nowNanoseconds() + 30_000_000_000
  while sockets.contains(where: { $0.pipeCount == 0 }) && nowNanoseconds() < connectDeadline { sleepSeconds(0.001) }
  let poller = Poller()
  for (i, s) in sockets.enumerated() { poller.add(s.fileDescriptor, i) }
  print("CONNECTED \(count)")
  flushOutput()
  var received = [Int](repeating: 0, count: count)
  var gaps = [Int](repeating: 0, count: count)
  var highest = [Int64](repeating: -1, count: count)
  var isOpen = [Bool](repeating: true, count: count)
  var open = count
  var events = [epoll_event](repeating: epoll_event(), count: 64)
  /// Takes what subscriber `i` has queued; false once it failed.
  func drain(_ i: Int) -> Bool {
    while true {
      let result: ReceiveResult
      do { result = try sockets[i].tryReceive() } catch { result = .endOfStream }
      switch result {
      case .message(let m):
        received[i] += 1
        if m.count >= 8 {
          var seq: Int64 = 0
          for k in 0..<8 { seq = seq << 8 | Int64(m[k]) }
          if seq != highest[i] + 1 { gaps[i] += 1 }
          highest[i] = max(highest[i], seq)
        }
      case .wouldBlock: return true
      case .endOfStream: return false
      }
    }
  }
  func stop(_ i: Int) {
    poller.remove(sockets[i].fileDescriptor)
    isOpen[i] = false
    open -= 1
  }
  let deadline = nowNanoseconds() + UInt64(timeout * 1e9)
  var nextCheck: UInt64 = 0
  while open > 0 && nowNanoseconds() < deadline {
    for i in poller.wait(&events, timeoutMs: 100) where isOpen[i] {
      if !drain(i) { stop(i) }
    }
    // A SUB socket outlives its pipe (it re-dials): a subscriber is done
    // once its pipe went, after what it had queued.
    let now = nowNanoseconds()
    if now >= nextCheck {
      nextCheck = now + 50_000_000
      for i in 0..<count where isOpen[i] && sockets[i].statistics.pipesRemoved > 0 {
        _ = drain(i)
        stop(i)
      }
    }
  }
  for i in 0..<count { print("sub \(i) received=\(received[i]) gaps=\(gaps[i]) highest=\(highest[i])") }
  print(
    "subscribers=\(count) received_total=\(received.reduce(0, +)) received_min=\(received.min() ?? 0) "
      + "received_max=\(received.max() ?? 0) still_open=\(open)")
  flushOutput()
  for s in sockets { s.abort() }
  exit(0)

default:
  logLine("usage: PeerServers echo-server|publisher|req-client|sub-client [options] (see the source header)")
  exit(2)
}

/// CPU time of every thread of `pid` (schedstat, ns), 0 for pid 0.
func serverCPU(_ pid: Int) -> UInt64 {
  guard pid > 0 else { return 0 }
  var total: UInt64 = 0
  for task in tasks(pid) {
    guard let f = fopen("/proc/\(pid)/task/\(task)/schedstat", "r") else { continue }
    var buffer = [CChar](repeating: 0, count: 128)
    if fgets(&buffer, 128, f) != nil {
      let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      total += UInt64(text.split(separator: " ").first ?? "0") ?? 0
    }
    fclose(f)
  }
  return total
}

func threadCount(_ pid: Int) -> Int { pid > 0 ? tasks(pid).count : 0 }

func tasks(_ pid: Int) -> [String] {
  guard let dir = opendir("/proc/\(pid)/task") else { return [] }
  defer { closedir(dir) }
  var names: [String] = []
  while let entry = readdir(dir) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) {
      String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
    }
    if !name.hasPrefix(".") { names.append(name) }
  }
  return names
}
