import CUserProtoShim
import Dispatch
import Glibc
import Locking
import Synchronization
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

@Suite("Event loop", .testThreads)
struct EventLoopTests {
  @Test("the requested engine is in use", arguments: loopBackends)
  func engine(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    #expect(loop.backend == (backend == .ioUring ? .ioUring : .epoll))
    #expect(!loop.capabilities.isEmpty)
  }

  @Test("tasks from many threads all run, in order per thread", arguments: loopBackends)
  func manyThreads(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let threads = 8
    let perThread = 5_000
    let seen = Collector<(Int, Int)>()
    DispatchQueue.concurrentPerform(iterations: threads) { t in
      for i in 0..<perThread { try? loop.execute { seen.append((t, i)) } }
    }
    #expect(eventually { seen.count == threads * perThread })
    var last = [Int](repeating: -1, count: threads)
    var ordered = true
    for (t, i) in seen.values {
      if i != last[t] + 1 { ordered = false }
      last[t] = i
    }
    #expect(ordered, "each thread's tasks ran in submission order")
  }

  @Test("timers fire in deadline order; cancelled ones never fire", arguments: loopBackends)
  func timerOrder(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let fired = Collector<(UInt64, Int)>()
    let early = Collector<Int>()
    // Far enough ahead that most cancels come first; a cancel that comes too
    // late says so (returns false), and then the timer must have run.
    let base = EventLoop.now() + 200_000_000
    var generator = SystemRandomNumberGenerator()
    let deadlines = (0..<5_000).map { _ in base + UInt64.random(in: 0..<80_000_000, using: &generator) }
    let handles = Lock<[EventLoop.Scheduled]>([])
    // The loop is held until every timer is scheduled, so all of them reach
    // its heap in one batch even if scheduling outlasts `base` on a loaded
    // machine (timers added after earlier deadlines fired would run late,
    // out of order, through no fault of the heap).
    // The loop must be inside the holding task before the first timer is
    // queued: a batch of tasks taken together with it would reach the heap
    // (and fire) before the rest.
    let hold = DispatchSemaphore(value: 0)
    let holding = DispatchSemaphore(value: 0)
    try loop.execute {
      holding.signal()
      hold.wait()
    }
    holding.wait()
    DispatchQueue.concurrentPerform(iterations: 4) { part in
      for i in stride(from: part, to: deadlines.count, by: 4) {
        let deadline = deadlines[i]
        let action: @Sendable () -> Void = {
          if EventLoop.now() < deadline { early.append(i) }
          fired.append((deadline, i))
        }
        if let h = try? loop.schedule(atNanoseconds: deadline, action) {
          handles.withLock { $0.append(h) }
        }
      }
    }
    hold.signal()
    // Cancel every timer with an odd index, from another thread, while they run.
    let all = handles.withLock { $0 }
    var cancelledIDs = Set<UInt64>()
    for h in all where h.id % 2 == 1 {
      if h.cancel() { cancelledIDs.insert(h.id) }
    }
    #expect(all.count == deadlines.count)
    #expect(eventually { fired.count + cancelledIDs.count >= deadlines.count })
    // Everything has fired: once this task has run, no timer is left.
    #expect(try onLoop(loop) { loop.pendingTimers } == 0)
    let order = fired.values
    #expect(zip(order, order.dropFirst()).allSatisfy { $0.0 <= $1.0 }, "fired in deadline order")
    #expect(order.count == deadlines.count - cancelledIDs.count, "exactly the timers not cancelled in time fired")
    #expect(early.count == 0, "no timer ran before its deadline")
  }

  @Test("a timer never fires before its deadline", arguments: loopBackends)
  func timerNotEarly(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let lateness = Collector<Int64>()
    for i in 0..<50 {
      let deadline = EventLoop.now() + UInt64(i) * 200_000
      try loop.schedule(atNanoseconds: deadline) { lateness.append(Int64(EventLoop.now()) - Int64(deadline)) }
    }
    #expect(eventually { lateness.count == 50 })
    #expect(lateness.values.allSatisfy { $0 >= 0 })
  }

  @Test("watching an fd reports readiness until cancelled", arguments: loopBackends)
  func watch(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let events = Collector<MaskEvents>()
    let handle = try onLoop(loop) {
      try loop.watch(fd: a, events: [.readable]) { result in
        if case .success(let e) = result { events.append(e) }
      }
    }
    #expect(write(b, "x", 1) == 1)
    #expect(eventually { events.values.contains { $0.contains(.readable) } })
    try onLoop(loop) { loop.cancel(handle) }
    let countAfterCancel = events.count
    #expect(try onLoop(loop) { loop.operationsInFlight } == 0)
    #expect(write(b, "y", 1) == 1)
    // A second watch on the same fd sees the new byte; the cancelled one,
    // which would have been told at the same time, must not have been.
    let witness = Collector<Int>()
    let second = try onLoop(loop) { try loop.watch(fd: a, events: [.readable]) { _ in witness.append(1) } }
    #expect(eventually { witness.count > 0 })
    try onLoop(loop) { loop.cancel(second) }
    #expect(events.count == countAfterCancel, "no callback after cancel")
  }

  @Test("a reused fd number never receives an earlier registration's events", arguments: loopBackends)
  func fdReuse(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let old = Collector<Int>()
    let new = Collector<Int>()
    let (a, b) = try streamPair()
    let oldHandle = try onLoop(loop) {
      try loop.watch(fd: a, events: [.readable]) { _ in old.append(1) }
    }
    try onLoop(loop) { loop.cancel(oldHandle) }
    close(b)
    // Put a new socket at the very same number: dup2 closes the old socket
    // and reuses its number atomically, even while other tests open fds.
    let (c, peer) = try streamPair()
    #expect(dup2(c, a) == a)
    close(c)
    let reused = a
    defer {
      close(reused)
      close(peer)
    }
    _ = try onLoop(loop) { try loop.watch(fd: reused, events: [.readable]) { _ in new.append(1) } }
    #expect(write(peer, "z", 1) == 1)
    #expect(eventually { new.count > 0 })
    #expect(old.count == 0, "the cancelled registration's handler never ran")
  }

  @Test("TCP echo of 1 MiB over accept, connect, receive and send", arguments: loopBackends)
  func tcpEcho(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let (listener, address) = try tcpListener()
    defer { close(listener) }
    let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let received = Collector<[UInt8]>()
    let serverFD = Lock<Int32>(-1)
    let client = tcpSocket()
    defer { close(client) }

    try onLoop(loop) {
      // Server: echo whatever arrives, one send in flight at a time.
      _ = try loop.accept(listener: listener) { result in
        guard case .success(let fd) = result else { return }
        serverFD.withLock { $0 = fd }
        let echo = Echo(loop: loop, fd: fd)
        _ = try? loop.receive(socket: fd) { chunk in
          if case .success(let bytes) = chunk, !bytes.isEmpty { echo.send(bytes) }
        }
      }
      _ = try loop.connect(socket: client, to: address) { result in
        guard case .success = result else { return }
        let writer = Echo(loop: loop, fd: client)
        writer.send(payload)
        _ = try? loop.receive(socket: client) { chunk in
          if case .success(let bytes) = chunk { received.append(bytes) }
        }
      }
    }
    #expect(eventually { received.values.reduce(0) { $0 + $1.count } >= payload.count })
    #expect(Array(received.values.joined()) == payload)
    close(serverFD.withLock { $0 })
  }

  @Test("shutdown with work in flight cancels everything and takes no more", arguments: loopBackends)
  func shutdownInFlight(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeTestLoop(backend)
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let receiveEnded = Collector<IOError>()
    let timerRan = Collector<Int>()
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .failure(let error) = result { receiveEnded.append(error) }
      }
    }
    for i in 0..<1000 { try loop.schedule(after: .seconds(60)) { timerRan.append(i) } }
    let sleeper = Task { try await loop.sleep(for: .seconds(60)) }
    await loop.shutdown()
    #expect(loop.isShutDown)
    #expect(receiveEnded.values.map(\.code) == [ECANCELED], "the in-flight receive ended with ECANCELED")
    #expect(timerRan.count == 0)
    // Whether the sleep was scheduled before or during shutdown, it ends.
    await #expect(throws: LoopError.shutDown) { try await sleeper.value }
    #expect(throws: LoopError.shutDown) { try loop.execute {} }
    #expect(throws: LoopError.shutDown) { try loop.schedule(after: .zero) {} }
    await #expect(throws: LoopError.shutDown) { try await loop.submit { 1 } }
    await loop.shutdown()  // idempotent
  }

  @Test("many operations on a tiny ring: full SQ and overflowing CQ lose nothing", arguments: loopBackends)
  func overflow(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend, entries: 4)
    defer { loop.shutdownAndWait() }
    var pairs: [(Int32, Int32)] = []
    for _ in 0..<300 { pairs.append(try streamPair()) }
    defer {
      for (a, b) in pairs {
        close(a)
        close(b)
      }
    }
    for (_, b) in pairs { #expect(write(b, "r", 1) == 1) }
    let ready = Collector<Int32>()
    let secondRound = Collector<Int32>()
    let round = Atomic<Int>(1)
    let readers = pairs.map(\.0)
    try onLoop(loop) {
      for a in readers {
        let fd = a
        _ = try loop.watch(fd: fd, events: [.readable]) { result in
          guard case .success(let e) = result, e.contains(.readable) else { return }
          // Second round: only an fd that really has the new byte counts.
          var pending: Int32 = 0
          if round.load(ordering: .acquiring) == 2, ioctl(fd, UInt(FIONREAD), &pending) == 0, pending > 0 {
            secondRound.append(fd)
          }
          ready.append(fd)
        }
      }
    }
    #expect(eventually { Set(ready.values).count == pairs.count }, "all 300 readiness events arrived")
    // Drain, then write again: the watches the overflowing CQ ended must
    // have been re-armed to report the second round.
    var byte: UInt8 = 0
    for (a, _) in pairs { #expect(read(a, &byte, 1) == 1) }
    round.store(2, ordering: .releasing)
    for (_, b) in pairs { #expect(write(b, "s", 1) == 1) }
    #expect(eventually { Set(secondRound.values).count == pairs.count }, "all 300 watches reported the second round")
    #expect(try onLoop(loop) { loop.operationsInFlight } == pairs.count)
    // The pressure really happened: 300 watches cannot fit a 4-entry SQ,
    // nor their completions an 8-entry CQ.
    let pressure = try onLoop(loop) { loop.engine.pressure }
    print("overflow test (\(backend)): \(pressure)")
    if backend == .ioUring {
      #expect(pressure.submissionQueueFull > 0, "\(pressure)")
      // The overflowing CQ either refused a submit or ended multishot watches.
      #expect(pressure.completionQueueBusy + pressure.multishotEnded > 0, "\(pressure)")
    }
  }

  @Test("async: submit returns a value; sleep waits; an actor runs on the loop", arguments: loopBackends)
  func concurrency(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeTestLoop(backend)
    let value = try await loop.submit { 6 * 7 }
    #expect(value == 42)
    let start = EventLoop.now()
    try await loop.sleep(for: .milliseconds(20))
    #expect(EventLoop.now() - start >= 20_000_000)
    let counter = LoopCounter(loop: loop)
    for _ in 0..<100 { await counter.increment() }
    #expect(await counter.value == 100)
    #expect(await counter.ranOnLoop)
    await loop.shutdown()
  }

  @Test("ring set-up refused: automatic falls back to epoll and says why")
  func injectedSetupFailures() throws {
    for (code, name) in [(ENOMEM, "ENOMEM"), (EPERM, "EPERM"), (ENOSYS, "ENOSYS")] {
      var configuration = EventLoop.Configuration(backend: .automatic)
      configuration.faults = LoopFaults()
      configuration.faults?.inject(.uringSetup, code, times: 2)
      configuration.honorsEnvironment = false
      let loop = try EventLoop(configuration: configuration)
      #expect(loop.backend == .epoll)
      #expect(loop.backendReason.contains(name), "\(loop.backendReason)")
      loop.shutdownAndWait()
      configuration.backend = .ioUring
      #expect(throws: IOError("io_uring_setup", code)) { try EventLoop(configuration: configuration) }
    }
  }

  @Test("a failed submit fails the operations in flight; the loop keeps working", arguments: loopBackends)
  func injectedSubmitFailure(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    // The next io_uring_enter (epoll_pwait2) fails; what is in flight then gets EIO.
    let outcome = Collector<Int32>()
    _ = try onLoop(loop) {
      let handle = try loop.receive(socket: a) { result in
        if case .failure(let error) = result { outcome.append(error.code) }
      }
      faults.inject(backend == .ioUring ? .uringEnter : .epollWait, EIO)
      return handle
    }
    #expect(eventually { outcome.values == [EIO] }, "\(outcome.values)")
    #expect(try onLoop(loop) { loop.operationsInFlight } == 0)
    #expect(try onLoop(loop) { 1 } == 1, "the loop still runs tasks")
    let later = Collector<[UInt8]>()
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { later.append(bytes) }
      }
    }
    #expect(write(b, "ok", 2) == 2)
    #expect(eventually { later.values.joined().count >= 2 })
  }

  @Test("io_uring refused by seccomp in a child: the loop falls back to epoll")
  func seccompFallback() throws {
    for code in ["EPERM", "ENOSYS"] {
      let (status, values) = try runCheck(["seccomp", code])
      #expect(status == 0, "\(values)")
      #expect(values["backend"] == "epoll")
      #expect(values["reason"]?.contains(code) == true, "\(values)")
      #expect(values["echo"] == "ok", "the fallback loop does real I/O")
    }
  }

  @Test("no fd leaks across 200 loops started and shut down with work in flight", arguments: loopBackends)
  func noLeaks(backend: EventLoop.BackendChoice) throws {
    if backend == .ioUring { try requireIoUring() }
    let (status, values) = try runCheck(["leak", backend == .ioUring ? "io_uring" : "epoll", "200"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
  }

  @Test("io_uring set-ups failing at setup, enable or the opcode probe leak no fd, forced or automatic")
  func setupFailuresLeakNothing() throws {
    try requireIoUring()
    let rounds = 30
    let (status, values) = try runCheck(["setup-leak", "\(rounds)"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
    // Each round: 3 automatic loops fell back to epoll; the forced ones
    // threw (the enable step only where rings are created disabled).
    #expect(values["fellBack"] == "\(3 * rounds)", "\(values)")
    #expect(Int(values["thrown"] ?? "") ?? 0 >= 2 * rounds, "\(values)")
  }

  @Test("a loop watching a mask fd it also updates does not feed back", arguments: loopBackends)
  func maskFeedback(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let mask = try MaskFD()
    defer { try? mask.close() }
    let calls = Collector<Int>()
    _ = try onLoop(loop) {
      try loop.watch(fd: mask.fileDescriptor, events: .all) { _ in
        calls.append(1)
        // Re-setting the state already set makes no syscall, so no wake-up.
        try? mask.set([.readable, .writable])
      }
    }
    try mask.set([.readable, .writable])
    #expect(eventually { calls.count >= 1 })
    // Feedback would add a call on (nearly) every loop turn: make the loop
    // turn 50 times (each task wakes it) and count.
    for _ in 0..<50 { try onLoop(loop) {} }
    #expect(calls.count <= 3, "\(calls.count) wake-ups for one change over 50 loop turns")
  }
}

/// Sends a byte stream in order with one send in flight (partial sends resumed).
final class Echo: @unchecked Sendable {
  let loop: EventLoop
  let fd: Int32
  private var queue: [UInt8] = []
  private var sending = false
  init(loop: EventLoop, fd: Int32) {
    self.loop = loop
    self.fd = fd
  }
  func send(_ bytes: [UInt8]) {
    queue += bytes
    pump()
  }
  private func pump() {
    guard !sending, !queue.isEmpty else { return }
    sending = true
    let chunk = Array(queue.prefix(256 * 1024))
    _ = try? loop.send(socket: fd, chunk) { [self] result in
      sending = false
      if case .success(let n) = result { queue.removeFirst(n) }
      pump()
    }
  }
}

/// An actor whose executor is the event loop.
actor LoopCounter {
  let loop: EventLoop
  var value = 0
  var ranOnLoop = true
  init(loop: EventLoop) { self.loop = loop }
  nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
  func increment() {
    if !loop.inEventLoop { ranOnLoop = false }
    value += 1
  }
}
