import Glibc
public import Testing

// Swift Testing runs every test, synchronous ones included, on the global
// concurrent executor, whose width on Linux is the number of CPUs: 2 here.
// Many of our synchronous tests block a thread for a while (poll(2) on a
// mask fd with a timeout, waiting for a helper process), and two of them at
// once stall every asynchronous test in the process, whose deadlines then
// expire for want of a thread. The `.testThreads` trait runs each test case of
// a suite on `TestThreadPool`, which starts another thread whenever a job
// arrives and none is idle, so a blocked test holds only its own thread. The
// library's own unstructured tasks still run on the global executor.

/// An elastic pool of threads serving as a task executor for tests.
public final class TestThreadPool: TaskExecutor, @unchecked Sendable {
  /// The pool the `.testThreads` trait uses.
  public static let shared = TestThreadPool(maximumThreads: 64)

  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let available: UnsafeMutablePointer<pthread_cond_t>
  private let maximumThreads: Int
  // Guarded by `mutex`.
  private var jobs: [UnownedJob] = []
  private var head = 0
  private var idle = 0
  private var threads = 0

  init(maximumThreads: Int) {
    self.maximumThreads = maximumThreads
    mutex = .allocate(capacity: 1)
    available = .allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    pthread_cond_init(available, nil)
  }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    pthread_mutex_lock(mutex)
    jobs.append(job)
    let spawn = idle == 0 && threads < maximumThreads
    if spawn { threads += 1 } else { pthread_cond_signal(available) }
    pthread_mutex_unlock(mutex)
    if spawn { startThread() }
  }

  private func startThread() {
    let context = Unmanaged.passRetained(self).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
      &thread, nil,
      { context in
        Unmanaged<TestThreadPool>.fromOpaque(context!).takeRetainedValue().work()
      }, context)
    precondition(result == 0, "TestThreadPool: pthread_create failed: \(result)")
    pthread_detach(thread)
  }

  private func work() -> Never {
    while true {
      pthread_mutex_lock(mutex)
      while head == jobs.count {
        idle += 1
        pthread_cond_wait(available, mutex)
        idle -= 1
      }
      let job = jobs[head]
      head += 1
      if head == jobs.count {
        jobs.removeAll(keepingCapacity: true)
        head = 0
      }
      pthread_mutex_unlock(mutex)
      job.runSynchronously(on: asUnownedTaskExecutor())
    }
  }
}

/// Runs each test case of the suite (or the test) it is applied to on
/// ``TestThreadPool/shared`` instead of the global concurrent executor.
public struct TestThreadsTrait: SuiteTrait, TestTrait, TestScoping {
  public var isRecursive: Bool { true }

  public func scopeProvider(for test: Test, testCase: Test.Case?) -> TestThreadsTrait? {
    testCase == nil ? nil : self
  }

  public func provideScope(
    for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
  ) async throws {
    try await withTaskExecutorPreference(TestThreadPool.shared) { try await function() }
  }
}

extension Trait where Self == TestThreadsTrait {
  /// Runs each test case on its own thread from ``TestThreadPool``: a test
  /// that blocks cannot starve the others of threads.
  public static var testThreads: Self { TestThreadsTrait() }
}
