import Dispatch
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Event loop timers", .testThreads)
struct EventLoopTimerTests {
  @Test("cancel-and-reschedule keeps the timer heap bounded", arguments: loopBackends)
  func heapCompacts(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    // A keep-alive: each round cancels the previous timer and schedules a
    // new one, on the loop (immediate removal) and from another thread.
    let largest = try onLoop(loop) {
      var current = try loop.schedule(after: .seconds(60)) {}
      var largest = 0
      for _ in 0..<10_000 {
        current.cancel()
        current = try loop.schedule(after: .seconds(60)) {}
        largest = max(largest, loop.timerHeapCount)
      }
      return largest
    }
    #expect(largest <= 130, "the heap held \(largest) entries for one live timer")
    var handle = try loop.schedule(after: .seconds(60)) {}
    for _ in 0..<5_000 {
      handle.cancel()
      handle = try loop.schedule(after: .seconds(60)) {}
    }
    let (entries, live) = try onLoop(loop) { (loop.timerHeapCount, loop.pendingTimers) }
    #expect(live == 2)
    #expect(entries <= 130, "\(entries) heap entries for \(live) live timers")
  }

  @Test("a timer cancelled from another thread never runs once cancel() returned true", arguments: loopBackends)
  func crossThreadCancel(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let ran = Collector<Int>()
    var cancelled: [Int] = []
    var handles: [(Int, EventLoop.Scheduled)] = []
    for i in 0..<3_000 {
      // Due at once: the loop races this thread's cancel.
      handles.append((i, try loop.schedule(after: .zero) { ran.append(i) }))
      if i % 3 == 0, let (j, h) = handles.popLast(), h.cancel() { cancelled.append(j) }
      if i % 7 == 0, let (j, h) = handles.first, h.cancel() {
        cancelled.append(j)
        handles.removeFirst()
      }
    }
    for (j, h) in handles where h.cancel() { cancelled.append(j) }
    // Every add and cancel task has run once this one has.
    try onLoop(loop) {}
    #expect(eventually { ran.count + cancelled.count == 3_000 }, "\(ran.count) ran, \(cancelled.count) cancelled")
    #expect(Set(ran.values).isDisjoint(with: cancelled), "no cancelled timer ran")
    #expect(try onLoop(loop) { loop.pendingTimers } == 0)
  }

  @Test("cancel() reports whether it won", arguments: loopBackends)
  func cancelOutcome(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let ran = DispatchSemaphore(value: 0)
    let fired = try loop.schedule(after: .zero) { ran.signal() }
    ran.wait()
    #expect(fired.cancel() == false, "too late: it ran")
    let pending = try loop.schedule(after: .seconds(60)) {}
    #expect(pending.cancel() == true)
    #expect(pending.cancel() == false, "already cancelled")
  }

  @Test("a cancelled task's sleep throws CancellationError and removes its timer", arguments: loopBackends)
  func sleepCancellation(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeTestLoop(backend)
    let sleeper = Task { try await loop.sleep(for: .seconds(60)) }
    // Wait until the timer exists, so the cancel hits a scheduled sleep.
    while try await loop.submit({ loop.pendingTimers }) == 0 { await Task.yield() }
    sleeper.cancel()
    await #expect(throws: CancellationError.self) { try await sleeper.value }
    // The removal is a task queued by the cancel: it has run once this has.
    #expect(try await loop.submit { loop.pendingTimers } == 0)
    // Cancelled before it started: it throws at once and schedules nothing.
    let early = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      try await loop.sleep(for: .seconds(60))
    }
    await #expect(throws: CancellationError.self) { try await early.value }
    #expect(try await loop.submit { loop.pendingTimers } == 0)
    await loop.shutdown()
  }
}
