import CUserProtoShim
import Dispatch
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Event loop shutdown races", .testThreads)
struct EventLoopShutdownTests {
  @Test("timers scheduled from another thread while the loop shuts down all end", arguments: loopBackends)
  func scheduleRacesShutdown(backend: EventLoop.BackendChoice) throws {
    // Before the fix, a timer whose add task was queued but not yet run when
    // shutdown cleared the timers was added afterwards and never ended.
    for _ in 0..<150 {
      let loop = try makeTestLoop(backend)
      let accepted = Atomic<Int>(0)
      let ended = Collector<Int>()
      DispatchQueue.concurrentPerform(iterations: 2) { side in
        if side == 0 {
          for i in 0..<40 {
            do {
              try loop.schedule(
                atNanoseconds: EventLoop.now() + 60_000_000_000, { ended.append(i) }, onShutdown: { ended.append(i) })
              accepted.add(1, ordering: .relaxed)
            } catch {
              break
            }
          }
        } else {
          loop.shutdownAndWait()
        }
      }
      loop.shutdownAndWait()
      #expect(ended.count == accepted.load(ordering: .relaxed), "every accepted timer ended exactly once")
      if ended.count != accepted.load(ordering: .relaxed) { return }
    }
  }

  @Test("an async sleep racing shutdown always resumes", arguments: loopBackends)
  func sleepRacesShutdown(backend: EventLoop.BackendChoice) async throws {
    for _ in 0..<100 {
      let loop = try makeTestLoop(backend)
      // The sleep's schedule and the shutdown race on different threads.
      let sleeper = Task.detached { try await loop.sleep(for: .seconds(60)) }
      await loop.shutdown()
      // Before the fix this could hang; now it must end with shutDown.
      await #expect(throws: LoopError.shutDown) { try await sleeper.value }
    }
  }

  @Test("after shutdown, jobs of an actor on the loop still run one at a time", arguments: loopBackends)
  func executorAfterShutdown(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeTestLoop(backend)
    let guarded = SerialProbe(loop: loop)
    await guarded.touch()
    await loop.shutdown()
    await withTaskGroup(of: Void.self) { group in
      for _ in 0..<64 { group.addTask { await guarded.touch() } }
    }
    #expect(await guarded.count == 65)
    #expect(await guarded.overlaps == 0, "no two jobs of the actor ran at the same time")
    #expect(await guarded.notIsolated == 0, "the executor says each job runs in its context")
  }

  @Test("jobs enqueued while the loop shuts down never overlap the loop's last tasks", arguments: loopBackends)
  func executorDuringShutdown(backend: EventLoop.BackendChoice) async throws {
    for _ in 0..<20 {
      let loop = try makeTestLoop(backend)
      let guarded = SerialProbe(loop: loop)
      async let shutdown: Void = loop.shutdown()
      await withTaskGroup(of: Void.self) { group in
        for _ in 0..<16 { group.addTask { await guarded.touch() } }
      }
      await shutdown
      #expect(await guarded.overlaps == 0)
      #expect(await guarded.count == 16)
    }
  }

  @Test("the wake-up eventfd is never written after the engine closed it", arguments: loopBackends)
  func wakeAfterClose(backend: EventLoop.BackendChoice) throws {
    var proved = false
    for _ in 0..<20 where !proved {
      let loop = try makeTestLoop(backend)
      let engine = loop.engine
      let number = wakeNumber(of: engine)  // immutable: readable from here
      loop.shutdownAndWait()
      // Put a fresh eventfd at the freed number, if nobody took it meanwhile
      // (F_DUPFD takes the lowest free number at or above it).
      let fresh = up_eventfd2(0, up_EFD_CLOEXEC | up_EFD_NONBLOCK)
      try #require(fresh >= 0)
      let probe = fcntl(fresh, F_DUPFD_CLOEXEC, number)
      close(fresh)
      try #require(probe >= 0)
      defer { close(probe) }
      guard probe == number else { continue }
      proved = true
      engine.wakeup()  // a late producer
      var value: UInt64 = 0
      #expect(read(probe, &value, 8) < 0 && errno == EAGAIN, "nothing was written to the new file")
    }
    #expect(proved, "the wake-up fd number was always taken by another test first")
  }
}

private func wakeNumber(of engine: any LoopEngine) -> Int32 {
  if let uring = engine as? URingEngine { return uring.wakeNumber }
  if let epoll = engine as? EpollEngine { return epoll.wakeNumber }
  return -1
}

/// An actor on a loop that notices when two of its jobs run at once.
actor SerialProbe {
  let loop: EventLoop
  private let running = Atomic<Int>(0)
  var count = 0
  var overlaps = 0
  var notIsolated = 0
  init(loop: EventLoop) { self.loop = loop }
  nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

  func touch() {
    if running.add(1, ordering: .acquiringAndReleasing).newValue != 1 { overlaps += 1 }
    if loop.isIsolatingCurrentContext() != true { notIsolated += 1 }
    // Long enough for a concurrent runner to show up.
    var spin = 0
    for i in 0..<20_000 { spin &+= i }
    if spin == 42 { count -= 1 }
    count += 1
    running.subtract(1, ordering: .acquiringAndReleasing)
  }
}
