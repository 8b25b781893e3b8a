import Glibc
import UserProto

/// `hold`: opens `connections` plain TCP connections to a listener (no SP,
/// nothing sent), holds them `hold-ms`, closes them, and prints its line.
/// The kernel completes each handshake into the listener's backlog whether
/// or not the listener can accept it, so a listener with few fds runs into
/// EMFILE on accept while they are held.
enum HoldRole {
  static let options: Set<String> = ["dial", "connections", "hold-ms"]

  static func run(_ arguments: Arguments) -> Int32 {
    let url = arguments.required("dial")
    let count = arguments.int("connections", default: 100, in: 1...100_000)
    let hold = arguments.int("hold-ms", default: 3000, in: 0...3_600_000)
    let address: SocketAddress
    do {
      guard case .tcp(let parsed) = try TransportURL(url, for: .dial) else { failUsage("hold --dial takes tcp://") }
      address = parsed
    } catch {
      failUsage("hold --dial: \(error)")
    }
    var json = JSONLine()
    json.add("role", "hold")
    let fdsBefore = openDescriptorCount()
    var fds: [Int32] = []
    var failures = 0
    var lastError = ""
    for _ in 0..<count {
      let flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
      let fd = socket(address.family, flags, 0)
      guard fd >= 0 else {
        failures += 1
        lastError = String(cString: strerror(errno))
        break
      }
      if let error = connectWithin(fd, address, milliseconds: 5000) {
        failures += 1
        lastError = String(cString: strerror(error))
        _ = close(fd)
        continue
      }
      fds.append(fd)
    }
    json.add("connected", fds.count)
    json.add("failed", failures)
    if !lastError.isEmpty { json.add("error", lastError) }
    sleepMilliseconds(hold)
    json.add("closed_at_ms", wallMilliseconds())
    for fd in fds { _ = close(fd) }
    json.add("fds_before", fdsBefore)
    json.add("fds_after", openDescriptorCount())
    json.emit()
    return 0
  }

  /// Connects the non-blocking `fd` to `address`, waiting up to
  /// `milliseconds`; nil once connected, else the errno.
  private static func connectWithin(_ fd: Int32, _ address: SocketAddress, milliseconds: Int32) -> Int32? {
    if address.withSockaddr({ connect(fd, $0, $1) }) == 0 { return nil }
    guard errno == EINPROGRESS else { return errno }
    var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
    guard poll(&entry, 1, milliseconds) == 1 else { return ETIMEDOUT }
    var error: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else { return errno }
    return error == 0 ? nil : error
  }
}
