import Dispatch
import Glibc
import Locking

/// Swift concurrency on top of the loop: async entry points, and the loop
/// as a serial executor so that code bound to it runs on its thread.
extension EventLoop: SerialExecutor, TaskExecutor {
  /// Runs an executor job on the loop; after shutdown, on a serial queue that starts once the loop ran its last task.
  public func enqueue(_ job: consuming ExecutorJob) {
    let unowned = UnownedJob(job)
    let executor = asUnownedSerialExecutor()
    do {
      try enqueue({ unowned.runSynchronously(on: executor) }, whileShuttingDown: true)
    } catch {
      // A job must run: after shutdown, jobs run one at a time on a serial
      // queue that starts only once the loop ran its last task.
      runAfterShutdown { unowned.runSynchronously(on: executor) }
    }
  }

  /// The loop as an unowned serial executor.
  public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
    UnownedSerialExecutor(ordinary: self)
  }

  /// True only for this loop itself.
  public func isSameExclusiveExecutionContext(other: EventLoop) -> Bool { other === self }

  /// Stops the program unless called on the loop's thread (or its after-shutdown queue).
  public func checkIsolated() {
    precondition(isIsolatingCurrentContext() == true, "not on the event loop's thread (nor its after-shutdown queue)")
  }

  /// True on the loop's thread and on its after-shutdown queue while it runs a job; false elsewhere.
  public func isIsolatingCurrentContext() -> Bool? {
    inEventLoop || runsAfterShutdownJob
  }

  /// Runs `body` on the loop and returns its result.
  /// - Throws: ``LoopError/shutDown``, or what `body` throws.
  public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
      do {
        try execute { continuation.resume(with: Result { try body() }) }
      } catch {
        continuation.resume(throwing: error)
      }
    }
  }

  /// Runs `body` on the loop and waits for its result: ``submit(_:)`` for
  /// synchronous callers. On the loop's own thread `body` runs at once.
  /// - Throws: ``LoopError/shutDown``, or what `body` throws.
  public func submitAndWait<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    if inEventLoop { return try body() }
    let outcome = Lock<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    // A task accepted before shutdown still runs (the loop drains its tasks
    // before it stops), so the wait ends.
    try execute {
      let result = Result { try body() }
      outcome.withLock { $0 = result }
      done.signal()
    }
    done.wait()
    return try (outcome.withLock { $0 } ?? .failure(LoopError.shutDown)).get()
  }

  /// Suspends for `duration` using a loop timer. A duration too long for
  /// the clock (over about 584 years) sleeps until the task is cancelled or
  /// the loop stops.
  /// - Throws: ``LoopError/shutDown`` when the loop stops first;
  ///   `CancellationError` when the task is cancelled (the timer is
  ///   cancelled with it).
  public func sleep(for duration: Duration) async throws {
    let sleep = SleepState()
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let once = ResumeOnce(continuation)
        guard sleep.begin(once) else {
          once.resume(with: .failure(CancellationError()))
          return
        }
        do {
          let timer = try schedule(
            atNanoseconds: EventLoop.deadline(after: duration),
            { once.resume(with: .success(())) },
            onShutdown: { once.resume(with: .failure(LoopError.shutDown)) })
          sleep.scheduled(timer)
        } catch {
          once.resume(with: .failure(error))
        }
      }
    } onCancel: {
      sleep.cancel()
    }
  }
}

/// The state of one ``EventLoop/sleep(for:)``, shared with its cancellation
/// handler, which may run before, during or after the timer is scheduled.
private final class SleepState: Sendable {
  private struct State {
    var once: ResumeOnce<Void>?
    var timer: EventLoop.Scheduled?
    var cancelled = false
  }
  private let state = Lock(State())

  /// False when the task was already cancelled.
  func begin(_ once: ResumeOnce<Void>) -> Bool {
    state.withLock { s in
      if s.cancelled { return false }
      s.once = once
      return true
    }
  }

  func scheduled(_ timer: EventLoop.Scheduled) {
    let cancelled = state.withLock { s in
      s.timer = timer
      return s.cancelled
    }
    if cancelled { timer.cancel() }
  }

  func cancel() {
    let (once, timer) = state.withLock { s in
      s.cancelled = true
      return (s.once, s.timer)
    }
    timer?.cancel()
    once?.resume(with: .failure(CancellationError()))
  }
}

/// Resumes a continuation at most once, from any thread.
final class ResumeOnce<T: Sendable>: Sendable {
  private let continuation: Lock<CheckedContinuation<T, any Error>?>
  init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Lock(continuation) }
  func resume(with result: Result<T, any Error>) {
    let c = continuation.withLock { c -> CheckedContinuation<T, any Error>? in
      defer { c = nil }
      return c
    }
    c?.resume(with: result)
  }
}
