import Glibc

/// What the soak measures of its own process, from /proc/self.
enum ProcessStats {
  /// Open file descriptors: the entries of /proc/self/fd, less the one the
  /// listing itself holds; -1 if the directory cannot be read.
  static func openDescriptors() -> Int { descriptorNames()?.count ?? -1 }

  /// Open descriptors other than timerfds: the Swift runtime's Dispatch
  /// makes those lazily (one per clock and timer queue it comes to use) and
  /// keeps them for the life of the process; UserProto makes none (`grep -rn
  /// timerfd Sources` finds nothing). The exact start-to-end check counts
  /// these, so a runtime timerfd first made mid-run (seen once in a 600 s
  /// run under `nice`) is not taken for a leak.
  static func ownDescriptors() -> Int {
    descriptorTargets().values.filter { $0 != "anon_inode:[timerfd]" }.count
  }

  /// What each open descriptor refers to (its /proc/self/fd link), by
  /// number: printed when the count at the end differs from the start.
  static func descriptorTargets() -> [Int: String] {
    var targets: [Int: String] = [:]
    for name in descriptorNames() ?? [] {
      guard let fd = Int(name) else { continue }
      let capacity = 4096
      var buffer = [CChar](repeating: 0, count: capacity)
      let length = readlink("/proc/self/fd/\(name)", &buffer, capacity - 1)
      targets[fd] = length > 0 ? String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
    return targets
  }

  /// The resident set size in KiB (`VmRSS` of /proc/self/status); -1 if it
  /// cannot be read.
  static func residentKilobytes() -> Int {
    guard let status = readFile("/proc/self/status") else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
      return Int(String(line.dropFirst("VmRSS:".count).filter { $0.isNumber })) ?? -1
    }
    return -1
  }

  /// Waits up to `limit` for the descriptor count to come back to `target`
  /// (graceful closes finish on the loops, after the calls that started
  /// them); returns the last count. It polls with usleep, not Task.sleep, so
  /// that the wait arms no runtime timer while it counts.
  static func descriptors(settlingAt target: Int, within limit: Duration) -> Int {
    let deadline = ContinuousClock.now + limit
    var count = ownDescriptors()
    while count != target && ContinuousClock.now < deadline {
      usleep(20_000)
      count = ownDescriptors()
    }
    return count
  }

  /// The names in /proc/self/fd, without `.`, `..` and the listing's own fd.
  private static func descriptorNames() -> [String]? {
    // glibc's opendir opens the directory with O_CLOEXEC.
    guard let directory = opendir("/proc/self/fd") else { return nil }
    defer { closedir(directory) }
    let own = String(dirfd(directory))
    var names: [String] = []
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
      }
      if name != "." && name != ".." && name != own { names.append(name) }
    }
    return names
  }

  /// A small file's contents (a /proc file: read until end of file).
  private static func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count > 0 {
        bytes += chunk[..<count]
      } else if count == 0 {
        return String(decoding: bytes, as: UTF8.self)
      } else if errno != EINTR {
        return nil
      }
    }
  }
}
