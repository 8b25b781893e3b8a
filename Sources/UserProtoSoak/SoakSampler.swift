import ExampleProtocols
import Glibc
import Synchronization
import UserProto

/// One sample: a line of `KEY=VALUE` fields that scripts/soak.sh reads.
///
///     t=12.001 rss_kb=23120 fds=19 churn=8123 pub_sent=60005 fast_recv=59990 slow_recv=47
///       drops=51234 timers=92160 vanished=310 errors=0      (one line)
///
/// `t` is seconds since the workers started; `rss_kb` is VmRSS; `fds` the
/// open descriptors; `drops` the publisher's (``Pub0Handler/drops``);
/// `timers` the loop timers scheduled; the other counts are
/// ``SoakCounters``'.
struct SoakSample {
  var elapsed: Duration = .zero
  var rssKilobytes = 0
  var descriptors = 0
  var churn = 0
  var published = 0
  var fastReceived = 0
  var slowReceived = 0
  var drops = 0
  var timers = 0
  var vanished = 0
  var errors = 0

  var line: String {
    "t=\(SoakSample.seconds(elapsed)) rss_kb=\(rssKilobytes) fds=\(descriptors) churn=\(churn) "
      + "pub_sent=\(published) fast_recv=\(fastReceived) slow_recv=\(slowReceived) drops=\(drops) "
      + "timers=\(timers) vanished=\(vanished) errors=\(errors)"
  }

  /// `duration` in seconds, with three decimals.
  static func seconds(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let milliseconds = max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    let fraction = String(milliseconds % 1000)
    return "\(milliseconds / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
  }
}

/// Finds workers whose counter stopped moving: a stall the counters alone
/// would hide until the end.
struct Watchdog {
  let limit: Duration
  private var last: [String: (value: Int, since: ContinuousClock.Instant)] = [:]

  init(limit: Duration) { self.limit = limit }

  /// The workers whose count has not changed for ``limit``.
  mutating func stalled(_ progress: [(name: String, value: Int)], now: ContinuousClock.Instant) -> [String] {
    var stalled: [String] = []
    for (name, value) in progress {
      if let previous = last[name], previous.value == value {
        if now - previous.since >= limit { stalled.append(name) }
      } else {
        last[name] = (value, now)
      }
    }
    return stalled
  }
}

extension SoakRig {
  /// Measures the process and reads the counters.
  func takeSample(elapsed: Duration) async -> SoakSample {
    var sample = SoakSample()
    sample.elapsed = elapsed
    sample.rssKilobytes = ProcessStats.residentKilobytes()
    sample.descriptors = ProcessStats.openDescriptors()
    sample.churn = counters.churn.load(ordering: .relaxed)
    sample.published = counters.published.load(ordering: .relaxed)
    sample.fastReceived = counters.fastReceived.load(ordering: .relaxed)
    sample.slowReceived = counters.slowReceived.load(ordering: .relaxed)
    sample.drops = (try? await publisher.withHandler { h, _ in h.drops }) ?? -1
    sample.timers = counters.timersScheduled.load(ordering: .relaxed)
    sample.vanished = counters.vanished.load(ordering: .relaxed)
    sample.errors = failures.count
    return sample
  }

  /// Prints a sample each second after `start` until `seconds` have
  /// passed, a worker failed, or one stalled (recorded as a failure).
  func sampleEverySecond(for seconds: Int, from start: ContinuousClock.Instant) async {
    var watchdog = Watchdog(limit: SoakRig.stallLimit)
    for second in 1...max(1, seconds) {
      try? await Task.sleep(until: start + .seconds(second), clock: .continuous)
      let now = ContinuousClock.now
      print(await takeSample(elapsed: now - start).line)
      fflush(nil)
      for name in watchdog.stalled(progress, now: now) {
        failures.record(name, SoakError("no progress for \(SoakRig.stallLimit)"))
      }
      if failures.count > 0 { return }
    }
  }
}
