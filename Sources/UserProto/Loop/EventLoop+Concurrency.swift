import Synchronization

/// Swift concurrency on top of the loop: async entry points, and the loop
/// as a serial executor so that code bound to it runs on its thread.
extension EventLoop: SerialExecutor, TaskExecutor {
  public func enqueue(_ job: consuming ExecutorJob) {
    let unowned = UnownedJob(job)
    let executor = asUnownedSerialExecutor()
    do {
      try enqueue { unowned.runSynchronously(on: executor) }
    } catch {
      // A job must run: after shutdown it runs on the caller's thread.
      unowned.runSynchronously(on: executor)
    }
  }

  public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
    UnownedSerialExecutor(ordinary: self)
  }

  public func isSameExclusiveExecutionContext(other: EventLoop) -> Bool { other === self }

  public func checkIsolated() {
    precondition(inEventLoop, "not on the event loop's thread")
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

  /// Suspends for `duration` using a loop timer.
  /// - Throws: ``LoopError/shutDown`` when the loop stops first.
  public func sleep(for duration: Duration) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      let once = ResumeOnce(continuation)
      do {
        try schedule(
          atNanoseconds: EventLoop.now() &+ EventLoop.nanoseconds(duration),
          { once.resume(with: .success(())) },
          onShutdown: { once.resume(with: .failure(LoopError.shutDown)) })
      } catch {
        once.resume(with: .failure(error))
      }
    }
  }
}

/// Resumes a continuation at most once, from any thread.
final class ResumeOnce<T: Sendable>: Sendable {
  private let continuation: Mutex<CheckedContinuation<T, any Error>?>
  init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }
  func resume(with result: Result<T, any Error>) {
    let c = continuation.withLock { c -> CheckedContinuation<T, any Error>? in
      defer { c = nil }
      return c
    }
    c?.resume(with: result)
  }
}
