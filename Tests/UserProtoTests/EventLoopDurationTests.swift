import Dispatch
import Glibc
import Locking
import Synchronization
import TestSupport
import Testing

@testable import UserProto

/// No duration traps or wraps: negative ones are now, ones too long for the
/// clock (over about 584 years) are never, and "never" neither fires nor
/// makes the loop spin.
@Suite("Event loop durations", .testThreads)
struct EventLoopDurationTests {
  @Test("the nanoseconds conversion saturates: negative is 0, too long is UInt64.max")
  func conversionSaturates() {
    #expect(EventLoop.nanoseconds(.zero) == 0)
    #expect(EventLoop.nanoseconds(.nanoseconds(1)) == 1)
    #expect(EventLoop.nanoseconds(.milliseconds(1500)) == 1_500_000_000)
    #expect(EventLoop.nanoseconds(.seconds(-5)) == 0)
    #expect(EventLoop.nanoseconds(.milliseconds(-1)) == 0, "a negative fraction of a second")
    #expect(EventLoop.nanoseconds(.nanoseconds(-1)) == 0)
    #expect(EventLoop.nanoseconds(.seconds(Int64.min)) == 0)
    // The largest whole second that fits, and the first that does not.
    #expect(EventLoop.nanoseconds(.seconds(18_446_744_073)) == 18_446_744_073_000_000_000)
    #expect(EventLoop.nanoseconds(.seconds(18_446_744_074)) == .max)
    #expect(EventLoop.nanoseconds(.seconds(Int64.max)) == .max)
    #expect(
      EventLoop.nanoseconds(Duration(secondsComponent: Int64.max, attosecondsComponent: 999_999_999_999_999_999))
        == .max)
  }

  @Test("deadlines saturate at never instead of wrapping into the past")
  func deadlineSaturates() {
    #expect(EventLoop.deadline(after: .seconds(1), from: 100) == 1_000_000_100)
    #expect(EventLoop.deadline(after: .seconds(-1), from: 100) == 100)
    #expect(EventLoop.deadline(after: .seconds(1), from: UInt64.max - 10) == EventLoop.never)
    #expect(EventLoop.deadline(after: .seconds(Int64.max)) == EventLoop.never)
    let now = EventLoop.now()
    #expect(EventLoop.deadline(after: .seconds(18_446_744_073)) == EventLoop.never, "now + 584 years overflows")
    #expect(EventLoop.deadline(after: .seconds(3600)) >= now + 3_600_000_000_000)
  }

  @Test(
    "schedule(after: .seconds(Int64.max)) never fires, keeps the loop idle, and can be cancelled",
    arguments: loopBackends)
  func scheduleNever(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let fired = Atomic<Int>(0)
    let never = try loop.schedule(after: .seconds(Int64.max)) { fired.add(1, ordering: .relaxed) }
    // A short timer still fires behind (here: in front of) the far one.
    let short = DispatchSemaphore(value: 0)
    try loop.schedule(after: .milliseconds(20)) { short.signal() }
    #expect(short.wait(timeout: .now() + 5) == .success)
    let waitsBefore = try onLoop(loop) { loop.engineWaits }
    usleep(300_000)
    let waitsAfter = try onLoop(loop) { loop.engineWaits }
    #expect(fired.load(ordering: .relaxed) == 0)
    // Idle: woken only by the two onLoop tasks, not by the far deadline.
    #expect(waitsAfter - waitsBefore < 20, "\(waitsAfter - waitsBefore) engine waits in 300 ms")
    #expect(try onLoop(loop) { loop.pendingTimers } == 1)
    #expect(never.cancel())
    #expect(try onLoop(loop) { loop.pendingTimers } == 0)
    #expect(fired.load(ordering: .relaxed) == 0)
  }

  @Test("a far but finite deadline waits in bounded steps: it neither fires nor spins", arguments: loopBackends)
  func farDeadline(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let fired = Atomic<Int>(0)
    // Further than Int64.max nanoseconds from now: the timeout the engine
    // gets must be clamped, not converted (trap) or wrapped (past).
    let far = try loop.schedule(atNanoseconds: UInt64.max - 1) { fired.add(1, ordering: .relaxed) }
    let later = try loop.schedule(atNanoseconds: EventLoop.now() + 250 * 365 * 86_400 * 1_000_000_000) {
      fired.add(1, ordering: .relaxed)
    }
    let waitsBefore = try onLoop(loop) { loop.engineWaits }
    usleep(300_000)
    let waitsAfter = try onLoop(loop) { loop.engineWaits }
    #expect(fired.load(ordering: .relaxed) == 0)
    #expect(waitsAfter - waitsBefore < 20, "\(waitsAfter - waitsBefore) engine waits in 300 ms")
    #expect(far.cancel() && later.cancel())
  }

  @Test("zero and negative delays fire promptly", arguments: loopBackends)
  func nonPositiveDelays(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let delays: [Duration] = [.zero, .seconds(-5), .milliseconds(-1), .nanoseconds(-1), .seconds(Int64.min)]
    for delay in delays {
      let ran = DispatchSemaphore(value: 0)
      let start = EventLoop.now()
      try loop.schedule(after: delay) { ran.signal() }
      #expect(ran.wait(timeout: .now() + 5) == .success, "\(delay)")
      #expect(EventLoop.now() - start < 1_000_000_000, "\(delay) fired within a second")
    }
  }

  @Test("sleep(for:) a duration too long for the clock sleeps until cancelled", arguments: loopBackends)
  func sleepNever(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeTestLoop(backend)
    let sleeper = Task { try await loop.sleep(for: .seconds(Int64.max)) }
    while try await loop.submit({ loop.pendingTimers }) == 0 { await Task.yield() }
    try await Task.sleep(for: .milliseconds(200))
    #expect(try await loop.submit({ loop.pendingTimers }) == 1, "still asleep")
    sleeper.cancel()
    await #expect(throws: CancellationError.self) { try await sleeper.value }
    #expect(try await loop.submit({ loop.pendingTimers }) == 0)
    await loop.shutdown()
  }

  @Test("a socket timer with a huge delay does not fire; a short one beside it does", arguments: loopBackends)
  func socketTimerNever(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let socket = try Socket(TimerHandler(), loop: loop)
    defer { socket.abort() }
    try socket.withHandlerAndWait { handler, context in
      handler.huge = try context.startTimer(after: .seconds(Int64.max))
      handler.short = try context.startTimer(after: .milliseconds(20))
    }
    #expect(
      eventually(5) { (try? socket.withHandlerAndWait { handler, _ in handler.fired.contains("short") }) == true })
    usleep(200_000)
    #expect(try socket.withHandlerAndWait { handler, _ in handler.fired } == ["short"])
    #expect(try onLoop(loop) { loop.pendingTimers } == 1, "the huge timer waits")
    try socket.withHandlerAndWait { handler, _ in handler.huge?.cancel() }
    #expect(try onLoop(loop) { loop.pendingTimers } == 0)
  }
}

/// Records which of its timers fired, by name.
private final class TimerHandler: SocketHandler {
  var huge: HandlerTimer?
  var short: HandlerTimer?
  var fired: [String] = []

  func timerFired(_ timer: HandlerTimer, context: SocketContext) {
    fired.append(timer === huge ? "huge" : timer === short ? "short" : "other")
  }
}
