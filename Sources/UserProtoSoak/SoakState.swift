import Glibc
import Locking
import Synchronization

/// What the workers count; the sampler reads it once a second.
final class SoakCounters: Sendable {
  /// REQ sockets made, dialed, answered and closed.
  let churn = Atomic<Int>(0)
  /// Requests the echo server answered.
  let served = Atomic<Int>(0)
  /// Messages the publisher's sends accepted.
  let published = Atomic<Int>(0)
  /// Messages the fast and the slow subscriber received.
  let fastReceived = Atomic<Int>(0)
  let slowReceived = Atomic<Int>(0)
  /// Vanishing subscribers made, read from and closed (or dropped).
  let vanished = Atomic<Int>(0)
  /// Loop timers scheduled, run, and cancelled in time (`cancel()` returned
  /// true: they never run). Once every deadline has passed, each timer is
  /// exactly one of the last two.
  let timersScheduled = Atomic<Int>(0)
  let timersFired = Atomic<Int>(0)
  let timersCancelled = Atomic<Int>(0)
}

/// The unexpected errors the workers hit: any one fails the soak. Each is
/// printed as it is recorded (`error: WORKER: WHAT`).
final class SoakFailures: Sendable {
  private let messages = Lock<[String]>([])

  func record(_ worker: String, _ error: any Error) { record("\(worker): \(error)") }

  func record(_ message: String) {
    messages.withLock { $0.append(message) }
    print("error: \(message)")
    fflush(nil)
  }

  var all: [String] { messages.withLock { $0 } }
  var count: Int { messages.withLock { $0.count } }
}

/// What went wrong, in words.
struct SoakError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
