// LockBench: what a lock/unlock around a one-word update costs with
// Locking.Lock (pthread_mutex_t) against Synchronization.Mutex, release
// build, one run: uncontended on one thread, and two threads contending.
//
//   swift build -c release --package-path Benchmarks --product LockBench
//   Benchmarks/.build/release/LockBench [--quick]
//
// Lock replaced Mutex so that ThreadSanitizer can see the library's locks
// (docs/reliability.md#sanitizers); this shows the release build pays no more.
import Glibc
import Locking
import Synchronization

let quick = CommandLine.arguments.contains("--quick")
let uncontended = quick ? 2_000_000 : 20_000_000
let perThread = quick ? 500_000 : 5_000_000

func nanoseconds() -> Double {
  var now = timespec()
  clock_gettime(CLOCK_MONOTONIC, &now)
  return Double(now.tv_sec) * 1e9 + Double(now.tv_nsec)
}

final class Locks: Sendable {
  let mutex = Mutex<Int>(0)
  let lock = Lock<Int>(0)
}
let locks = Locks()

final class Work {
  let body: @Sendable () -> Void
  init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// ns per withLock, `threads` threads each running `iterations` of `body`.
func measure(threads: Int, iterations: Int, _ body: @escaping @Sendable () -> Void) -> Double {
  let start = nanoseconds()
  if threads == 1 {
    for _ in 0..<iterations { body() }
  } else {
    var handles: [pthread_t] = []
    for _ in 0..<threads {
      var handle = pthread_t()
      let context = Unmanaged.passRetained(Work(body)).toOpaque()
      let rc = pthread_create(
        &handle, nil,
        { raw in
          let work = Unmanaged<Work>.fromOpaque(raw!).takeRetainedValue()
          for _ in 0..<perThread { work.body() }
          return nil
        }, context)
      precondition(rc == 0)
      handles.append(handle)
    }
    for handle in handles { pthread_join(handle, nil) }
  }
  return (nanoseconds() - start) / Double(threads * iterations)
}

func format(_ value: Double) -> String {
  let tenths = Int((value * 10).rounded())
  return "\(tenths / 10).\(tenths % 10)"
}

print("| test | Synchronization.Mutex ns/op | Locking.Lock ns/op |")
print("|---|---|---|")
for round in 1...3 {
  let mutex = measure(threads: 1, iterations: uncontended) { locks.mutex.withLock { $0 &+= 1 } }
  let lock = measure(threads: 1, iterations: uncontended) { locks.lock.withLock { $0 &+= 1 } }
  print("| uncontended, round \(round) | \(format(mutex)) | \(format(lock)) |")
}
for round in 1...3 {
  let mutex = measure(threads: 2, iterations: perThread) { locks.mutex.withLock { $0 &+= 1 } }
  let lock = measure(threads: 2, iterations: perThread) { locks.lock.withLock { $0 &+= 1 } }
  print("| 2 threads contending, round \(round) | \(format(mutex)) | \(format(lock)) |")
}
let total = locks.mutex.withLock { $0 } + locks.lock.withLock { $0 }
precondition(total == 2 * (3 * uncontended + 3 * 2 * perThread), "lost updates: \(total)")
