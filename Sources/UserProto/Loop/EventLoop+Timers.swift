import Locking
import Synchronization

// Timers: scheduling, cancelling and firing them, and the saturating
// duration arithmetic their deadlines use.
extension EventLoop {
  /// A scheduled timer; cancel it from any thread.
  public struct Scheduled: Sendable, Hashable {
    let id: UInt64
    let loop: EventLoop
    let state: TimerState

    /// True for the same timer of the same loop.
    public static func == (a: Scheduled, b: Scheduled) -> Bool { a.id == b.id && a.loop === b.loop }
    /// Hashes the timer's id.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Cancels the timer, from any thread. Returns true when it was
    /// cancelled in time: it has not run and never will. False when it
    /// already ran (or is running), was cancelled before, or the loop shut
    /// down first.
    @discardableResult
    public func cancel() -> Bool {
      guard state.cancel() else { return false }
      // The entry itself goes lazily (the heap compacts when half of it is
      // cancelled); the action is dropped on the loop.
      if loop.inEventLoop {
        loop.cancelTimer(id)
      } else {
        let loop = self.loop
        let id = self.id
        try? loop.enqueue { loop.cancelTimer(id) }
      }
      return true
    }
  }

  private static let nextTimerID = Atomic<UInt64>(1)

  /// Runs `task` on the loop once `delay` has passed. A zero or negative
  /// delay runs it as soon as possible; one too long for the clock (over
  /// about 584 years, `.seconds(Int64.max)` say) never runs it, until it is
  /// cancelled or the loop shuts down.
  @discardableResult
  public func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) throws(LoopError) -> Scheduled {
    try schedule(atNanoseconds: EventLoop.deadline(after: delay), task)
  }

  /// Runs `task` on the loop at a monotonic deadline (``now()`` nanoseconds).
  /// `UInt64.max` is never: the timer does not run, and the loop does not
  /// wake up for it.
  @discardableResult
  public func schedule(atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void) throws(LoopError)
    -> Scheduled
  {
    try schedule(atNanoseconds: deadline, task, onShutdown: nil)
  }

  /// Like ``schedule(atNanoseconds:_:)``, plus `onShutdown`, which runs
  /// instead of `task` if the loop shuts down first. Exactly one of them
  /// runs unless the timer is cancelled.
  @discardableResult
  func schedule(
    atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void,
    onShutdown: (@Sendable () -> Void)?
  ) throws(LoopError) -> Scheduled {
    let id = EventLoop.nextTimerID.wrappingAdd(1, ordering: .relaxed).oldValue
    let state = TimerState()
    let action = TimerAction(run: task, onShutdown: onShutdown, state: state)
    if inEventLoop {
      guard shared.withLock({ $0.state == .running }) else { throw LoopError.shutDown }
      addTimer(id: id, deadline: deadline, action)
    } else {
      try enqueue { [self] in addTimer(id: id, deadline: deadline, action) }
    }
    return Scheduled(id: id, loop: self, state: state)
  }

  private func addTimer(id: UInt64, deadline: UInt64, _ action: TimerAction) {
    if timersClosed {
      // Queued before shutdown began, run after the timers were cleared.
      if action.state.fire() { action.onShutdown?() }
      return
    }
    timerSequence += 1
    timers.insert(.init(deadline: deadline, sequence: timerSequence, id: id))
    timerActions[id] = action
  }

  private func cancelTimer(_ id: UInt64) {
    guard timerActions.removeValue(forKey: id) != nil else { return }
    // Cancel-and-reschedule patterns would otherwise grow the heap forever.
    if timers.count > 64 && timers.count > 2 * timerActions.count {
      timers.removeAll { timerActions[$0.id] == nil }
    }
  }

  /// Entries in the timer heap, cancelled ones not yet dropped included.
  var timerHeapCount: Int { timers.count }

  /// Timers scheduled and not yet run or cancelled.
  var pendingTimers: Int { timerActions.count }

  /// The monotonic clock in nanoseconds.
  public static func now() -> UInt64 { Sys.monotonicNanoseconds() }

  /// A deadline that never comes (``schedule(atNanoseconds:_:)``).
  static let never = UInt64.max

  /// The longest the engine is asked to wait at once; a later deadline is
  /// waited for in several waits. No engine or kernel then sees a huge
  /// timeout: one added to the current time without saturating (as
  /// io_uring_enter may do) would wrap into the past and end every wait at
  /// once.
  static let longestWait: UInt64 = 86_400 * 1_000_000_000

  /// `d` in whole nanoseconds, saturating: a negative duration is 0, one
  /// over `UInt64.max` nanoseconds (about 584 years) is `UInt64.max`.
  static func nanoseconds(_ d: Duration) -> UInt64 {
    let attoseconds = d.attoseconds
    guard attoseconds > 0 else { return 0 }
    let nanoseconds = attoseconds / 1_000_000_000
    return nanoseconds >= Int128(UInt64.max) ? .max : UInt64(nanoseconds)
  }

  /// The deadline `delay` after `start` (default: now), saturating at
  /// ``never``, so a huge delay is never rather than a deadline in the past.
  static func deadline(after delay: Duration, from start: UInt64 = EventLoop.now()) -> UInt64 {
    let (sum, overflow) = start.addingReportingOverflow(nanoseconds(delay))
    return overflow ? never : sum
  }

  func nextDeadline() -> UInt64? {
    while let first = timers.first, timerActions[first.id]?.state.isPending != true {
      timers.removeFirst()
      timerActions[first.id] = nil
    }
    return timers.first?.deadline
  }

  func runTimers(now: UInt64) {
    while let first = timers.first, first.deadline <= now {
      timers.removeFirst()
      // A cancel from another thread wins if it got there first.
      if let action = timerActions.removeValue(forKey: first.id), action.state.fire() { action.run() }
    }
  }
}
