import Dispatch
import Glibc
import Locking
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

/// Runs `body` on the loop and waits up to 10 s: a deaf loop fails the test
/// instead of hanging it.
private func onLoopOrTimeout<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () throws -> T) throws -> T? {
  let result = Lock<Result<T, any Error>?>(nil)
  let done = DispatchSemaphore(value: 0)
  try loop.execute {
    result.withLock { $0 = Result { try body() } }
    done.signal()
  }
  guard done.wait(timeout: .now() + 10) == .success else { return nil }
  return try result.withLock { $0! }.get()
}

private func datagramPair() throws -> (Int32, Int32) {
  var fds: [Int32] = [-1, -1]
  try #require(
    socketpair(
      AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
      == 0)
  return (fds[0], fds[1])
}

@Suite(
  "io_uring engine robustness",
  .enabled(if: ioUringAvailable, Comment(rawValue: ioUringRefusal ?? "io_uring is refused on this host")), .testThreads)
struct EventLoopURingTests {
  private func loop(_ faults: LoopFaults, automatic: Bool = false) throws -> EventLoop {
    var configuration = EventLoop.Configuration(backend: automatic ? .automatic : .ioUring)
    configuration.honorsEnvironment = false
    configuration.faults = faults
    return try EventLoop(configuration: configuration)
  }

  @Test("a re-arm that cannot get an SQE ends the operation with the error")
  func failedRearm() throws {
    let faults = LoopFaults()
    let loop = try loop(faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try datagramPair()
    defer {
      close(a)
      close(b)
    }
    let chunks = Collector<[UInt8]>()
    let failures = Collector<Int32>()
    // Datagram receives are single-shot: each completion is re-armed.
    try onLoop(loop) {
      _ = try loop.receive(socket: a, datagrams: true) { result in
        switch result {
        case .success(let bytes): chunks.append(bytes)
        case .failure(let error): failures.append(error.code)
        }
      }
      faults.inject(.uringGetSQE, EBUSY)
    }
    #expect(write(b, "one", 3) == 3)
    #expect(eventually { failures.count == 1 })
    #expect(chunks.values == [Array("one".utf8)])
    #expect(failures.values == [EBUSY], "the failed re-arm ended the receive with its error")
    #expect(try onLoop(loop) { loop.operationsInFlight } == 0)
  }

  @Test("a failed wake-up re-arm is retried: the loop is never deaf")
  func failedWakeRearm() throws {
    let faults = LoopFaults()
    let loop = try loop(faults)
    defer { loop.shutdownAndWait() }
    // The next SQE taken is the wake-up read's re-arm after this task's
    // wake-up; it fails once.
    try onLoop(loop) { faults.inject(.uringGetSQE, EBUSY) }
    for i in 0..<20 {
      // A fresh thread each time, so the loop is asleep when the task comes.
      let value = try onLoopOrTimeout(loop) { i }
      #expect(value == i, "task \(i) ran")
      if value == nil { return }
    }
    // On a loaded machine the wake-ups of several tasks can coalesce, so
    // the failing re-arm may be the last task's own; the loop's next wait
    // retries it.
    #expect(eventually { (try? onLoop(loop) { (loop.engine as? URingEngine)?.wakeIsArmed }) == true })
  }

  @Test("a ring that cannot be enabled: automatic falls back to epoll, io_uring throws")
  func enableRefused() throws {
    // Only rings created disabled (single issuer) are enabled.
    let probe = try loop(LoopFaults())
    let singleIssuer = probe.capabilities.contains { $0.contains("single issuer") }
    probe.shutdownAndWait()
    guard singleIssuer else { try Test.cancel("this kernel's rings are not created disabled") }

    let faults = LoopFaults()
    faults.inject(.uringEnable, EPERM)
    let fallback = try loop(faults, automatic: true)
    defer { fallback.shutdownAndWait() }
    #expect(fallback.backend == .epoll)
    #expect(fallback.backendReason.contains("ENABLE_RINGS"), "\(fallback.backendReason)")
    #expect(try onLoop(fallback) { 7 } == 7, "the fallback loop runs")

    faults.inject(.uringEnable, EPERM)
    #expect(throws: IOError("io_uring_register(ENABLE_RINGS)", EPERM)) { try loop(faults) }
  }

  @Test("a missing opcode: automatic falls back to epoll and names it; io_uring throws")
  func probeMissingOpcode() throws {
    for name in ["POLL_ADD", "ASYNC_CANCEL", "ACCEPT", "CONNECT", "RECV", "SEND", "READ"] {
      let faults = LoopFaults()
      faults.inject(.uringProbe(opcode: name), EOPNOTSUPP)
      let fallback = try loop(faults, automatic: true)
      #expect(fallback.backend == .epoll)
      #expect(fallback.backendReason.contains("IORING_OP_\(name)"), "\(fallback.backendReason)")
      fallback.shutdownAndWait()
      faults.inject(.uringProbe(opcode: name), EOPNOTSUPP)
      #expect(throws: IOError.self) { try loop(faults) }
    }
    let healthy = try loop(LoopFaults())
    defer { healthy.shutdownAndWait() }
    #expect(healthy.capabilities.contains { $0.contains("opcodes probed") && $0.contains("RECV") })
  }

  @Test("a multishot watch refused with EINVAL becomes single-shot and keeps reporting")
  func multishotPollDowngrade() throws {
    let faults = LoopFaults()
    let loop = try loop(faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let readable = Collector<Int>()
    faults.inject(.uringMultishot, EINVAL)
    _ = try onLoop(loop) {
      try loop.watch(fd: a, events: [.readable]) { result in
        if case .success(let e) = result, e.contains(.readable) { readable.append(1) }
      }
    }
    for round in 1...3 {
      #expect(write(b, "x", 1) == 1)
      #expect(eventually { readable.count >= round }, "round \(round)")
      var byte: UInt8 = 0
      #expect(read(a, &byte, 1) == 1)
    }
    #expect(loop.capabilities.contains { $0.hasPrefix("poll: multishot refused") }, "\(loop.capabilities)")
    #expect(try onLoop(loop) { loop.operationsInFlight } == 1, "the watch is still live")
  }

  @Test("a multishot accept refused with EINVAL becomes single-shot and accepts every connection")
  func multishotAcceptDowngrade() throws {
    let faults = LoopFaults()
    let loop = try loop(faults)
    defer { loop.shutdownAndWait() }
    let (listener, address) = try tcpListener()
    defer { close(listener) }
    let accepted = Collector<Int32>()
    faults.inject(.uringMultishot, EINVAL)
    _ = try onLoop(loop) {
      try loop.accept(listener: listener) { result in
        if case .success(let fd) = result { accepted.append(fd) }
      }
    }
    var clients: [Int32] = []
    defer { for fd in clients + accepted.values { close(fd) } }
    for round in 1...3 {
      let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      clients.append(client)
      #expect(address.withSockaddr { connect(client, $0, $1) } == 0)
      #expect(eventually { accepted.count >= round }, "connection \(round) accepted")
    }
    #expect(loop.capabilities.contains { $0.hasPrefix("accept: multishot refused") }, "\(loop.capabilities)")
    #expect(try onLoop(loop) { loop.operationsInFlight } == 1, "the accept is still live")
  }

  @Test("a multishot receive refused with EINVAL becomes single-shot and loses nothing")
  func multishotReceiveDowngrade() throws {
    let faults = LoopFaults()
    let loop = try loop(faults)
    defer { loop.shutdownAndWait() }
    guard loop.capabilities.contains(where: { $0.hasPrefix("multishot recv") }) else {
      try Test.cancel("no provided buffer ring: receives are single-shot already")
    }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let received = Collector<[UInt8]>()
    faults.inject(.uringMultishot, EINVAL)
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { received.append(bytes) }
      }
    }
    #expect(write(b, "abc", 3) == 3)
    #expect(eventually { received.values.joined().count == 3 })
    #expect(write(b, "def", 3) == 3)
    #expect(eventually { Array(received.values.joined()) == Array("abcdef".utf8) })
    #expect(loop.capabilities.contains { $0.hasPrefix("recv: multishot refused") }, "\(loop.capabilities)")
  }
}

@Suite("Engine failing persistently", .testThreads)
struct EventLoopPersistentFailureTests {
  @Test(
    "every wait fails: operations fail, the loop backs off and still runs tasks, then recovers",
    arguments: loopBackends)
  func persistentFailure(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let call: LoopFaults.Call = backend == .ioUring ? .uringEnter : .epollWait
    let failures = Collector<Int32>()
    try onLoop(loop) {
      _ = try loop.watch(fd: a, events: [.readable]) { result in
        if case .failure(let error) = result { failures.append(error.code) }
      }
      faults.inject(call, EIO, times: .max)
    }
    #expect(eventually { failures.values == [EIO] }, "\(failures.values)")
    #expect(eventually { (try? onLoop(loop) { loop.engineBackoffMilliseconds }) ?? 0 > 0 }, "it backs off")
    #expect(try onLoop(loop) { loop.engineFailures } > 1)
    // Operations started while it fails fail too, instead of hanging.
    let later = Collector<Int32>()
    try onLoop(loop) {
      _ = try loop.watch(fd: a, events: [.readable]) { result in
        if case .failure(let error) = result { later.append(error.code) }
      }
    }
    #expect(eventually { later.values == [EIO] })
    faults.clear(call)
    let received = Collector<[UInt8]>()
    try onLoop(loop) {
      _ = try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { received.append(bytes) }
      }
    }
    #expect(write(b, "ok", 2) == 2)
    #expect(eventually { received.values.joined().count == 2 }, "the loop works again")
    #expect(try onLoop(loop) { loop.engineBackoffMilliseconds } == 0)
  }
}
