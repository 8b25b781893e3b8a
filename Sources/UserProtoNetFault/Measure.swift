import Glibc

/// What a role measures about its own process: open fds, CPU time, peak
/// RSS, and the CPU spent while the application waited with nothing to do.

/// File descriptors open now (`/proc/self/fd`, without the directory stream
/// itself); -1 if it cannot be read (EMFILE...).
func openDescriptorCount() -> Int {
  guard let dir = opendir("/proc/self/fd") else { return -1 }
  defer { closedir(dir) }
  var count = 0
  while readdir(dir) != nil { count += 1 }
  return count - 3  // ".", ".." and the directory stream
}

/// CPU time (user + system) of every thread of this process so far, in µs.
func processCPUMicroseconds() -> Int {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  let user = Int(usage.ru_utime.tv_sec) * 1_000_000 + Int(usage.ru_utime.tv_usec)
  let system = Int(usage.ru_stime.tv_sec) * 1_000_000 + Int(usage.ru_stime.tv_usec)
  return user + system
}

/// The monotonic clock, in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The wall clock in milliseconds since the epoch: what the script compares
/// with its own `date +%s%3N` (the moment it started a fault).
func wallMilliseconds() -> Int {
  var ts = timespec()
  clock_gettime(CLOCK_REALTIME, &ts)
  return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
}

/// The peak resident set size (VmHWM) in KiB, or -1.
func peakResidentKilobytes() -> Int {
  guard let file = fopen("/proc/self/status", "re") else { return -1 }
  defer { fclose(file) }
  var line: UnsafeMutablePointer<CChar>? = nil
  var capacity = 0
  defer { free(line) }
  while getline(&line, &capacity, file) > 0, let line {
    let text = String(cString: line)
    guard text.hasPrefix("VmHWM:") else { continue }
    var value = 0
    for byte in text.utf8 where byte >= 48 && byte <= 57 { value = value * 10 + Int(byte - 48) }
    return value
  }
  return -1
}

/// Sleeps `milliseconds`, resuming after signals.
func sleepMilliseconds(_ milliseconds: Int) {
  guard milliseconds > 0 else { return }
  var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
  var remaining = timespec()
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Sleeps until the monotonic clock reaches `deadline` (ns).
func sleepUntil(_ deadline: UInt64) {
  let now = monotonicNanoseconds()
  guard deadline > now else { return }
  let left = deadline - now
  var request = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
  var remaining = timespec()
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Time and CPU spent waiting: each `poll(2)` on a socket's fd that timed
/// out with nothing ready counts (its wall time, and the CPU the whole
/// process used meanwhile, the event loop's thread included), as does an
/// explicit idle or stall phase. A loop that spins while the application
/// waits shows here as CPU close to the wall time.
struct WaitMeter {
  private(set) var waitNanoseconds: UInt64 = 0
  private(set) var waitCPUMicroseconds = 0

  /// Polls `fd` for `events` up to `milliseconds`; returns the revents (0
  /// on a timeout, which is counted as waiting).
  mutating func poll(_ fd: Int32, _ events: Int16, milliseconds: Int32) -> Int16 {
    let start = monotonicNanoseconds()
    let cpu = processCPUMicroseconds()
    var entry = pollfd(fd: fd, events: events, revents: 0)
    let rc = Glibc.poll(&entry, 1, milliseconds)
    if rc == 0 {
      waitNanoseconds += monotonicNanoseconds() - start
      waitCPUMicroseconds += processCPUMicroseconds() - cpu
    }
    return rc > 0 ? entry.revents : 0
  }

  /// Sleeps `milliseconds`, counted as waiting.
  mutating func idle(milliseconds: Int) {
    let start = monotonicNanoseconds()
    let cpu = processCPUMicroseconds()
    sleepMilliseconds(milliseconds)
    waitNanoseconds += monotonicNanoseconds() - start
    waitCPUMicroseconds += processCPUMicroseconds() - cpu
  }

  var waitMilliseconds: Int { Int(waitNanoseconds / 1_000_000) }
  var waitCPUMilliseconds: Int { waitCPUMicroseconds / 1000 }
}

/// A count another process reads while this one runs (and after it was
/// killed): the number at the start of the file, rewritten in place with
/// pwrite(2). For the SIGKILL scenarios, whose victim prints no final line.
struct ProgressFile {
  private let fd: Int32

  /// Opens (creates, truncates) `path`; nil without a path.
  init?(_ path: String?) {
    guard let path else { return nil }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      failUsage("cannot open --progress \(path): \(String(cString: strerror(errno)))")
    }
    self.fd = fd
  }

  /// Writes `count`, padded to a fixed width so a reader never sees two
  /// numbers run together.
  func record(_ count: Int) {
    var text = String(count)
    while text.utf8.count < 20 { text += " " }
    text += "\n"
    _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
  }

  func close() { _ = Glibc.close(fd) }
}
