import CUserProtoShim
import Glibc
import Synchronization

/// The one place MaskCore calls the kernel. Every wrapper retries EINTR,
/// returns EAGAIN as a value where the caller expects it, and maps any other
/// errno to ``MaskError/system(operation:errno:)``. Tests inject faults here.
enum Sys {
  // MARK: Fault injection (tests only; one relaxed load when unused).

  private static let injectionsActive = Atomic<Int>(0)
  @TaskLocal private static var injected: [String: Int32] = [:]
  @TaskLocal private static var counter: SyscallCounter?

  /// Counts the system calls `body` makes on this task (tests and
  /// measurements; other tasks are unaffected).
  static func countingSyscalls(_ body: () throws -> Void) rethrows -> Int {
    let counter = SyscallCounter()
    injectionsActive.add(1, ordering: .relaxed)
    defer { injectionsActive.subtract(1, ordering: .relaxed) }
    try $counter.withValue(counter) { try body() }
    return counter.count
  }

  /// Runs `body` with every call of `operation` made by this task failing
  /// with `code`. Other tasks and threads are unaffected.
  @discardableResult
  static func withInjectedFault<R>(_ operation: String, errno code: Int32, _ body: () throws -> R) rethrows -> R {
    injectionsActive.add(1, ordering: .relaxed)
    defer { injectionsActive.subtract(1, ordering: .relaxed) }
    return try $injected.withValue([operation: code]) { try body() }
  }

  @inline(__always)
  private static func check(_ operation: String) throws(MaskError) {
    guard injectionsActive.load(ordering: .relaxed) > 0 else { return }
    counter?.count += 1
    if let code = injected[operation] {
      throw .system(operation: operation, errno: code)
    }
  }

  @inline(__always)
  private static func retrying(_ operation: String, _ body: () -> Int) throws(MaskError) -> Int {
    try check(operation)
    while true {
      let r = body()
      if r >= 0 { return r }
      let code = errno
      if code == EINTR { continue }
      throw .system(operation: operation, errno: code)
    }
  }

  // MARK: Descriptors

  static func close(_ fd: Int32) {
    // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
    _ = Glibc.close(fd)
  }

  static func setNonBlocking(_ fd: Int32, _ on: Bool) throws(MaskError) {
    let flags = try retrying("fcntl(F_GETFL)") { Int(fcntl(fd, F_GETFL)) }
    let new = on ? (Int32(flags) | O_NONBLOCK) : (Int32(flags) & ~O_NONBLOCK)
    _ = try retrying("fcntl(F_SETFL)") { Int(fcntl(fd, F_SETFL, new)) }
  }

  static func setCloseOnExec(_ fd: Int32, _ on: Bool) throws(MaskError) {
    _ = try retrying("fcntl(F_SETFD)") { Int(fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0)) }
  }

  // MARK: the efd_mask module

  /// open(2) of the efd_mask module's device.
  static func openDevice(_ path: String, flags: Int32) throws(MaskError) -> Int32 {
    Int32(try retrying("open(\(path))") { Int(Glibc.open(path, flags)) })
  }

  // MARK: eventfd

  static func eventfd(flags: Int32) throws(MaskError) -> Int32 {
    try check("eventfd2")
    let r = up_eventfd2(0, flags)
    if r < 0 { throw .system(operation: "eventfd2", errno: -r) }
    return r
  }

  static func writeMask(_ fd: Int32, _ state: MaskState) throws(MaskError) {
    try check("write(efd_mask)")
    let r = up_efd_mask_write(fd, state.events.rawValue, state.data)
    if r < 0 { throw .system(operation: "write(efd_mask)", errno: Int32(-r)) }
    if r != 12 { throw .system(operation: "write(efd_mask) wrote \(r) of 12 bytes", errno: EIO) }
  }

  // MARK: AF_UNIX datagram sockets

  static func unixDatagramSocket(closeOnExec: Bool) throws(MaskError) -> Int32 {
    var type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
    if closeOnExec { type |= Int32(SOCK_CLOEXEC.rawValue) }
    return Int32(try retrying("socket(AF_UNIX, SOCK_DGRAM)") { Int(socket(AF_UNIX, type, 0)) })
  }

  /// A connected AF_UNIX datagram pair, non-blocking and close-on-exec.
  static func unixDatagramPair() throws(MaskError) -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    _ = try retrying("socketpair(AF_UNIX, SOCK_DGRAM)") { Int(socketpair(AF_UNIX, type, 0, &fds)) }
    return (fds[0], fds[1])
  }

  /// Binds to a kernel-chosen abstract name and returns it.
  static func autobind(_ fd: Int32) throws(MaskError) -> UnixAddress {
    var family = sa_family_t(AF_UNIX)
    _ = try retrying("bind(autobind)") { () -> Int in
      withUnsafePointer(to: &family) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          Int(bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size)))
        }
      }
    }
    var address = UnixAddress()
    var length = socklen_t(MemoryLayout<sockaddr_un>.size)
    _ = try retrying("getsockname") {
      withUnsafeMutablePointer(to: &address.storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          Int(getsockname(fd, $0, &length))
        }
      }
    }
    address.length = length
    return address
  }

  static func connect(_ fd: Int32, to address: UnixAddress) throws(MaskError) {
    var storage = address.storage
    _ = try retrying("connect") {
      withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          Int(Glibc.connect(fd, $0, address.length))
        }
      }
    }
  }

  /// Dissolves a datagram socket's association (connect to AF_UNSPEC).
  static func disconnect(_ fd: Int32) throws(MaskError) {
    var unspec = sockaddr()
    unspec.sa_family = sa_family_t(AF_UNSPEC)
    _ = try retrying("connect(AF_UNSPEC)") {
      Int(Glibc.connect(fd, &unspec, socklen_t(MemoryLayout<sa_family_t>.size)))
    }
  }

  /// Sends `count` zero bytes as one datagram, to the connected peer or to
  /// `address`. EAGAIN is an error here: a mask fd's queues never fill.
  static func sendDatagram(_ fd: Int32, count: Int, to address: UnixAddress? = nil) throws(MaskError) {
    try check("send")
    try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(count, 1)) { buffer throws(MaskError) in
      buffer.initialize(repeating: 0)
      while true {
        let r: Int
        if var storage = address?.storage, let length = address?.length {
          r = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
              sendto(fd, buffer.baseAddress, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL), $0, length)
            }
          }
        } else {
          r = Glibc.send(fd, buffer.baseAddress, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        }
        if r >= 0 { return }
        let code = errno
        if code == EINTR { continue }
        throw MaskError.system(operation: "send", errno: code)
      }
    }
  }

  /// Receives and discards one datagram. Returns false on EAGAIN.
  static func receiveDatagram(_ fd: Int32) throws(MaskError) -> Bool {
    try check("recv")
    var scratch: UInt8 = 0
    while true {
      let r = recv(fd, &scratch, 1, Int32(MSG_DONTWAIT | MSG_TRUNC))
      if r >= 0 { return true }
      let code = errno
      if code == EINTR { continue }
      if code == EAGAIN { return false }
      throw MaskError.system(operation: "recv", errno: code)
    }
  }

  static func shutdownBoth(_ fd: Int32) throws(MaskError) {
    _ = try retrying("shutdown") { Int(shutdown(fd, Int32(SHUT_RDWR))) }
  }

  static func setSocketOption(_ fd: Int32, _ name: Int32, _ value: Int32) throws(MaskError) {
    var v = value
    _ = try retrying("setsockopt") {
      Int(setsockopt(fd, SOL_SOCKET, name, &v, socklen_t(MemoryLayout<Int32>.size)))
    }
  }

  static func socketOption(_ fd: Int32, _ name: Int32) throws(MaskError) -> Int32 {
    var v: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    _ = try retrying("getsockopt") { Int(getsockopt(fd, SOL_SOCKET, name, &v, &length)) }
    return v
  }

  /// Stores a 32-bit value in a socket timeout's seconds field.
  static func setTimeoutSeconds(_ fd: Int32, _ name: Int32, _ seconds: UInt32) throws(MaskError) {
    var tv = timeval(tv_sec: Int(seconds), tv_usec: 0)
    _ = try retrying("setsockopt(timeout)") {
      Int(setsockopt(fd, SOL_SOCKET, name, &tv, socklen_t(MemoryLayout<timeval>.size)))
    }
  }

  static func timeoutSeconds(_ fd: Int32, _ name: Int32) throws(MaskError) -> UInt32 {
    var tv = timeval()
    var length = socklen_t(MemoryLayout<timeval>.size)
    _ = try retrying("getsockopt(timeout)") { Int(getsockopt(fd, SOL_SOCKET, name, &tv, &length)) }
    return UInt32(truncatingIfNeeded: tv.tv_sec)
  }

  // MARK: Readiness

  /// poll(2) on one fd with all mask events requested; returns the revents.
  static func poll(_ fd: Int32, timeoutMilliseconds: Int32 = 0) throws(MaskError) -> UInt32 {
    var entry = pollfd(fd: fd, events: Int16(truncatingIfNeeded: MaskEvents.all.rawValue), revents: 0)
    _ = try retrying("poll") { Int(Glibc.poll(&entry, 1, timeoutMilliseconds)) }
    if entry.revents & Int16(POLLNVAL) != 0 { throw .system(operation: "poll", errno: EBADF) }
    return UInt32(UInt16(bitPattern: entry.revents))
  }
}

final class SyscallCounter: @unchecked Sendable {
  var count = 0
}

/// An AF_UNIX socket address (here always an abstract, kernel-chosen one).
struct UnixAddress: Sendable {
  var storage = sockaddr_un()
  var length = socklen_t(0)
}
