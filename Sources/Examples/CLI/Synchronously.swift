import Dispatch
import Locking

/// Runs `operation` (a handler query through `Socket.withHandler`) from
/// synchronous code, blocking the calling thread until it finishes, and
/// returns its result.
///
/// For the commands' plain poll(2) loops, which run on the main thread (or a
/// test's own thread). The operation runs in a task on the global executor
/// and its query on the socket's loop, so never call this on an event loop's
/// thread or from a task: both must be free to run it.
func synchronously<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
  let outcome = Outcome<T>()
  Task {
    do {
      outcome.finish(.success(try await operation()))
    } catch {
      outcome.finish(.failure(error))
    }
  }
  return try outcome.wait().get()
}

/// The result of ``synchronously(_:)``'s task, handed to the waiting thread.
private final class Outcome<T: Sendable>: Sendable {
  private let result = Lock<Result<T, any Error>?>(nil)
  private let done = DispatchSemaphore(value: 0)

  func finish(_ value: Result<T, any Error>) {
    result.withLock { $0 = value }
    done.signal()
  }

  func wait() -> Result<T, any Error> {
    done.wait()
    return result.withLock { $0 } ?? .failure(CancellationError())
  }
}
