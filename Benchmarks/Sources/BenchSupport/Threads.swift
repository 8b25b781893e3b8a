import CBenchSupport
import Glibc
import Synchronization

/// Starts a detached pthread running `body`.
public func detachThread(_ body: @escaping @Sendable () -> Void) {
  final class Box: @unchecked Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
  }
  var handle = pthread_t()
  let box = Unmanaged.passRetained(Box(body)).toOpaque()
  let rc = pthread_create(
    &handle, nil,
    { raw in
      Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
      return nil
    }, box)
  precondition(rc == 0, "pthread_create failed")
  pthread_detach(handle)
}

/// A one-shot signal between threads (a mutex and condition variable), so the
/// benchmarks need neither Dispatch nor Foundation.
public final class Latch: @unchecked Sendable {
  private var mutex = pthread_mutex_t()
  private var condition = pthread_cond_t()
  private var count: Int

  public init(count: Int = 1) {
    self.count = count
    pthread_mutex_init(&mutex, nil)
    pthread_cond_init(&condition, nil)
  }

  deinit {
    pthread_mutex_destroy(&mutex)
    pthread_cond_destroy(&condition)
  }

  public func countDown() {
    pthread_mutex_lock(&mutex)
    count -= 1
    if count <= 0 { pthread_cond_broadcast(&condition) }
    pthread_mutex_unlock(&mutex)
  }

  public func wait() {
    pthread_mutex_lock(&mutex)
    while count > 0 { pthread_cond_wait(&condition, &mutex) }
    pthread_mutex_unlock(&mutex)
  }

  /// Waits up to `seconds`; false on timeout.
  public func wait(seconds: Double) -> Bool {
    var deadline = timespec()
    clock_gettime(CLOCK_REALTIME, &deadline)
    let total = Int(deadline.tv_nsec) + Int(seconds * 1e9)
    deadline.tv_sec += total / 1_000_000_000
    deadline.tv_nsec = total % 1_000_000_000
    pthread_mutex_lock(&mutex)
    defer { pthread_mutex_unlock(&mutex) }
    while count > 0 {
      if pthread_cond_timedwait(&condition, &mutex, &deadline) == ETIMEDOUT { return count <= 0 }
    }
    return true
  }
}

/// A mutable box for state confined to one event loop thread, handed to
/// `@Sendable` closures that all run on that thread.
public final class LoopBox<T>: @unchecked Sendable {
  public var value: T
  public init(_ value: T) { self.value = value }
}

/// Pins the calling thread to one CPU (threads it creates inherit the mask).
@discardableResult
public func pinCurrentThread(toCPU cpu: Int) -> Bool { bench_pin_thread(Int32(cpu)) == 0 }

/// Lets the calling thread run on every CPU again.
public func unpinCurrentThread() { _ = bench_pin_thread(-1) }

/// The number of online CPUs.
public var onlineCPUs: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
