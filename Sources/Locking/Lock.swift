#if canImport(Glibc)
  public import Glibc
#elseif canImport(Musl)
  public import Musl
#elseif canImport(Darwin)
  public import Darwin
#endif

/// A mutual-exclusion lock around a value, with the API of `Synchronization.Mutex`
/// (`init(_:)`, `withLock(_:)` with typed throws), built on `pthread_mutex_t`.
///
/// Why not `Mutex`: on Linux `Mutex` is a futex inside a standard library not
/// compiled for ThreadSanitizer, so TSan cannot see its happens-before edges and
/// reports every access it guards as a race. TSan intercepts the pthread calls, so
/// state guarded by `Lock` is checked for real. In release builds `Lock` is also
/// cheaper than `Mutex` here (docs/reliability.md#sanitizers), so there is one
/// implementation for every build. Replacing `Mutex` is a rename.
///
/// The pthread mutex and the value live in heap memory of their own: a pthread
/// mutex must not move once initialised, and a `~Copyable` struct may.
public struct Lock<Value: ~Copyable>: ~Copyable {
  @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
  @usableFromInline let value: UnsafeMutablePointer<Value>

  /// Creates a lock guarding `initialValue`.
  public init(_ initialValue: consuming sending Value) {
    mutex = .allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    let rc = pthread_mutex_init(mutex, nil)
    precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    value = .allocate(capacity: 1)
    value.initialize(to: initialValue)
  }

  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deinitialize(count: 1)
    mutex.deallocate()
    value.deinitialize(count: 1)
    value.deallocate()
  }

  /// Calls `body` with exclusive access to the value and returns its result; an
  /// error `body` throws is rethrown with its type, the lock released either way.
  @inlinable
  public borrowing func withLock<Result: ~Copyable, E: Error>(
    _ body: (inout sending Value) throws(E) -> sending Result
  ) throws(E) -> sending Result {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body(&value.pointee)
  }
}

extension Lock: @unchecked Sendable where Value: ~Copyable {}
