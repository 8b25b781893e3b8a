import CUserProtoShim
import Glibc
import MaskCore
import Synchronization

/// The one place UserProto calls the kernel, shaped like MaskCore's `Sys`.
///
/// Every wrapper retries EINTR (except where a retry would be wrong:
/// close(2), a non-blocking connect(2), and waits with a timeout, which
/// return instead so the loop recomputes the timeout), returns the errno
/// values its callers expect as values (EAGAIN/EWOULDBLOCK as nil, EEXIST,
/// EINPROGRESS), and throws every other failure as an ``IOError`` naming the
/// call. The io_uring shim's calls, which return -errno, go through the same
/// mapping.
///
/// It is also where tests fail calls: each wrapper first asks the
/// ``LoopFaults`` table bound to the calling task or thread (the loop binds
/// its configuration's table on its thread) for a fault, and reports an
/// injected errno exactly as if the kernel had returned it, EINTR included.
/// Unused, that costs one relaxed atomic load per call. See "Syscalls" in
/// docs/eventloop.md.
enum Sys {
  // MARK: Fault injection and the error mapping

  /// The errno injected for `call`, if the calling context has a table with
  /// a fault for it (one relaxed load when no table anywhere has one).
  @inline(__always)
  static func injected(_ call: LoopFaults.Call) -> Int32? {
    guard LoopFaults.armedTables.load(ordering: .relaxed) > 0 else { return nil }
    return LoopFaults.current?.take(call)
  }

  /// An injected failure for an operation that makes no system call of its
  /// own (an io_uring submission): an injected EINTR is consumed as the
  /// retry of a real one would be, and the operation goes ahead.
  static func injectedFailure(_ call: LoopFaults.Call) -> Int32? {
    while let code = injected(call) {
      if code != EINTR { return code }
    }
    return nil
  }

  /// One attempt: the injected fault, else the call. `body` returns the
  /// call's result, negative on failure; with `negated` the failure is
  /// `-errno` in the result (the shim's convention), else it is in `errno`.
  @inline(__always)
  private static func attempt(
    _ call: LoopFaults.Call, negated: Bool, _ body: () -> Int
  ) -> (value: Int, code: Int32) {
    if let code = injected(call) { return (-1, code) }
    let r = body()
    if r >= 0 { return (r, 0) }
    return (r, negated ? Int32(truncatingIfNeeded: -r) : errno)
  }

  /// The call's result, or its errno (0 on success), EINTR retried.
  @inline(__always)
  private static func outcome(
    _ call: LoopFaults.Call, negated: Bool = false, _ body: () -> Int
  ) -> (value: Int, code: Int32) {
    while true {
      let result = attempt(call, negated: negated, body)
      if result.code != EINTR { return result }
    }
  }

  /// The call's result; EINTR retried, any other failure thrown.
  @inline(__always)
  private static func retrying(
    _ call: LoopFaults.Call, _ operation: @autoclosure () -> String, negated: Bool = false, _ body: () -> Int
  ) throws(IOError) -> Int {
    let (value, code) = outcome(call, negated: negated, body)
    if code != 0 { throw IOError(operation(), code) }
    return value
  }

  /// The result of a non-blocking call; nil when it would block (EAGAIN,
  /// EWOULDBLOCK); EINTR retried, any other failure thrown.
  @inline(__always)
  private static func retryingNonBlocking(
    _ call: LoopFaults.Call, _ operation: @autoclosure () -> String, negated: Bool = false, _ body: () -> Int
  ) throws(IOError) -> Int? {
    let (value, code) = outcome(call, negated: negated, body)
    if code == 0 { return value }
    if wouldBlock(code) { return nil }
    throw IOError(operation(), code)
  }

  @inline(__always)
  private static func wouldBlock(_ code: Int32) -> Bool { code == EAGAIN || code == EWOULDBLOCK }

  // MARK: Descriptors

  /// close(2) calls that found no open fd (EBADF): an fd closed twice, an
  /// ownership bug. Counted (tests check it stays 0), not trapped.
  static let badCloses = Atomic<Int>(0)

  /// close(2). Never retried: on Linux the number is released even when
  /// close reports EINTR or EIO, and a retry could close a file another
  /// thread was just given that number for. Not injectable: the fd is gone
  /// either way.
  static func close(_ fd: Int32) {
    if Glibc.close(fd) != 0 && errno == EBADF { badCloses.add(1, ordering: .relaxed) }
  }

  /// The device and inode behind `fd` (fstat(2)).
  static func fileIdentity(_ fd: Int32) throws(IOError) -> (device: UInt64, inode: UInt64) {
    var info = stat()
    _ = try retrying(.fstat, "fstat") { Int(Glibc.fstat(fd, &info)) }
    return (UInt64(info.st_dev), UInt64(info.st_ino))
  }

  /// unlink(2) of a Unix-domain socket's file.
  static func unlink(_ path: String) throws(IOError) {
    _ = try retrying(.unlink, "unlink(\(path))") { Int(Glibc.unlink(path)) }
  }

  /// poll(2) on one fd for `events`, waiting up to `milliseconds` (0: a
  /// probe); returns the revents, 0 on a timeout.
  static func poll(_ fd: Int32, events: Int16, milliseconds: Int32) throws(IOError) -> Int16 {
    var entry = pollfd(fd: fd, events: events, revents: 0)
    _ = try retrying(.poll, "poll") { Int(Glibc.poll(&entry, 1, milliseconds)) }
    return entry.revents
  }

  /// Writes `text` to standard error, best effort: EINTR retried and a
  /// short write continued; a failure ends it, as there is nowhere left to
  /// report it.
  static func writeStandardError(_ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let n = bytes.withUnsafeBytes { Glibc.write(STDERR_FILENO, $0.baseAddress! + offset, $0.count - offset) }
      if n > 0 {
        offset += n
      } else if n < 0 && errno == EINTR {
        continue
      } else {
        return
      }
    }
  }

  /// The monotonic clock in nanoseconds. clock_gettime(CLOCK_MONOTONIC)
  /// fails only for a bad clock or pointer (EINVAL, EFAULT): checked, and a
  /// failure is a crash, not a wrong time.
  static func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    let rc = clock_gettime(CLOCK_MONOTONIC, &ts)
    precondition(rc == 0, "clock_gettime(CLOCK_MONOTONIC) failed: \(errnoDescription(errno))")
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
  }

  // MARK: eventfd (the loop's wake-up)

  /// eventfd2(2), close-on-exec, with a count of 0.
  static func eventfd(nonBlocking: Bool) throws(IOError) -> Int32 {
    let flags = up_EFD_CLOEXEC | (nonBlocking ? up_EFD_NONBLOCK : 0)
    return Int32(try retrying(.eventfd, "eventfd", negated: true) { Int(up_eventfd2(0, flags)) })
  }

  /// Adds one to an eventfd's count: a wake-up. A full count (EAGAIN) is a
  /// value: a wake-up is pending anyway. Any other failure (EBADF, EINVAL)
  /// means the caller's ownership of the fd is broken, and would lose the
  /// wake-up: it traps. Not injectable for that reason.
  static func signalEvent(_ fd: Int32) {
    var one: UInt64 = 1
    let size = MemoryLayout<UInt64>.size
    while true {
      let r = Glibc.write(fd, &one, size)
      if r == size { return }
      let code = r < 0 ? errno : EIO
      if code == EINTR { continue }
      if wouldBlock(code) { return }
      preconditionFailure("write(eventfd) failed: \(errnoDescription(code))")
    }
  }

  /// Reads (and so resets) a non-blocking eventfd's count. Nothing pending
  /// (EAGAIN) is a value: the wake-up was already taken.
  static func drainEvent(_ fd: Int32) throws(IOError) {
    var value: UInt64 = 0
    let size = MemoryLayout<UInt64>.size
    _ = try retryingNonBlocking(.wakeRead, "read(eventfd)") { Glibc.read(fd, &value, size) }
  }

  // MARK: Sockets

  /// socket(2); `type` carries SOCK_NONBLOCK and SOCK_CLOEXEC.
  static func socket(family: Int32, type: Int32) throws(IOError) -> Int32 {
    Int32(try retrying(.socket, "socket") { Int(Glibc.socket(family, type, 0)) })
  }

  static func bind(_ fd: Int32, to address: SocketAddress) throws(IOError) {
    _ = try retrying(.bind, "bind(\(address))") { address.withSockaddr { Int(Glibc.bind(fd, $0, $1)) } }
  }

  static func listen(_ fd: Int32, backlog: Int32) throws(IOError) {
    _ = try retrying(.listen, "listen") { Int(Glibc.listen(fd, backlog)) }
  }

  /// setsockopt(2) with `value` (an `Int32`, a `linger`...). `operation`
  /// names the option, e.g. `"setsockopt(TCP_NODELAY)"`.
  static func setOption<Value>(
    _ fd: Int32, _ level: Int32, _ name: Int32, _ value: Value, _ operation: @autoclosure () -> String
  ) throws(IOError) {
    let size = socklen_t(MemoryLayout<Value>.size)
    _ = try retrying(.setsockopt, operation()) {
      withUnsafeBytes(of: value) { Int(Glibc.setsockopt(fd, level, name, $0.baseAddress, size)) }
    }
  }

  /// getsockopt(2) of an `Int32` option.
  static func intOption(
    _ fd: Int32, _ level: Int32, _ name: Int32, _ operation: @autoclosure () -> String
  ) throws(IOError) -> Int32 {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    _ = try retrying(.getsockopt, operation()) { Int(Glibc.getsockopt(fd, level, name, &value, &length)) }
    return value
  }

  /// The error a non-blocking connect ended with (SO_ERROR): 0 when it
  /// connected.
  static func pendingError(_ fd: Int32) throws(IOError) -> Int32 {
    try intOption(fd, SOL_SOCKET, SO_ERROR, "getsockopt(SO_ERROR)")
  }

  /// getsockname(2).
  static func localAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try socketName(fd, "getsockname", Glibc.getsockname)
  }

  /// getpeername(2).
  static func remoteAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try socketName(fd, "getpeername", Glibc.getpeername)
  }

  private static func socketName(
    _ fd: Int32, _ name: String,
    _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
  ) throws(IOError) -> SocketAddress {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = try retrying(.socketName, name) {
      withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Int(call(fd, $0, &length)) }
      }
    }
    return withUnsafeBytes(of: &storage) { SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
  }

  /// connect(2) of a non-blocking stream socket. True when it connected at
  /// once; false while the connection goes on: EINPROGRESS, and EINTR and
  /// EAGAIN, which do not stop it either. Those are not retried (a second
  /// connect would fail with EALREADY): the end is read with
  /// ``pendingError(_:)`` once the socket is writable. An injected EINTR
  /// is treated as retried, as the kernel was never asked.
  static func connect(_ fd: Int32, to address: SocketAddress) throws(IOError) -> Bool {
    var code: Int32
    repeat { code = injected(.connect) ?? 0 } while code == EINTR
    if code == 0 {
      code = address.withSockaddr { Glibc.connect(fd, $0, $1) == 0 ? 0 : errno }
    }
    switch code {
    case 0: return true
    case EINPROGRESS, EINTR, EAGAIN: return false
    default: throw IOError("connect", code)
    }
  }

  /// connect(2) of a datagram socket (it only sets the peer: it never
  /// blocks, and EINTR is retried).
  static func connectDatagram(_ fd: Int32, to address: SocketAddress) throws(IOError) {
    _ = try retrying(.connect, "connect(\(address))") { address.withSockaddr { Int(Glibc.connect(fd, $0, $1)) } }
  }

  /// accept4(2), non-blocking and close-on-exec; nil when no connection is
  /// pending. ECONNABORTED (the peer gave up before it was accepted) is
  /// skipped: the next connection is taken.
  static func accept(_ fd: Int32) throws(IOError) -> Int32? {
    while true {
      let (value, code) = outcome(.accept, negated: true) { Int(up_accept(fd)) }
      if code == 0 { return Int32(value) }
      if code == ECONNABORTED { continue }
      if wouldBlock(code) { return nil }
      throw IOError("accept", code)
    }
  }

  /// send(2), or sendto(2) with `address`, without blocking or SIGPIPE;
  /// the bytes sent, nil when the socket's buffer is full.
  static func send(_ fd: Int32, _ bytes: [UInt8], to address: SocketAddress?) throws(IOError) -> Int? {
    let flags = Int32(MSG_DONTWAIT | MSG_NOSIGNAL)
    return try retryingNonBlocking(.send, "send") {
      bytes.withUnsafeBytes { raw in
        if let address {
          return address.withSockaddr { Glibc.sendto(fd, raw.baseAddress, raw.count, flags, $0, $1) }
        }
        return Glibc.send(fd, raw.baseAddress, raw.count, flags)
      }
    }
  }

  /// recv(2) without blocking (`flags` adds MSG_TRUNC for datagrams); the
  /// length received (0: end of stream, or an empty datagram), nil when
  /// nothing is pending.
  static func receive(_ fd: Int32, into buffer: inout [UInt8], flags: Int32) throws(IOError) -> Int? {
    try retryingNonBlocking(.receive, "recv") {
      buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | flags) }
    }
  }

  /// recvfrom(2) of one datagram with MSG_TRUNC (a length over the buffer's
  /// means it was cut) and its sender; nil when none is pending.
  static func receiveDatagram(
    _ fd: Int32, into buffer: inout [UInt8]
  ) throws(IOError) -> (length: Int, sender: SocketAddress)? {
    var from = sockaddr_storage()
    var length = socklen_t(0)
    let received = try retryingNonBlocking(.receive, "recvfrom") { () -> Int in
      length = socklen_t(MemoryLayout<sockaddr_storage>.size)
      return buffer.withUnsafeMutableBytes { raw in
        withUnsafeMutablePointer(to: &from) {
          $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.recvfrom(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT | MSG_TRUNC), $0, &length)
          }
        }
      }
    }
    guard let received else { return nil }
    let sender = withUnsafeBytes(of: &from) {
      SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<min(Int(length), $0.count)]))
    }
    return (received, sender)
  }

  /// shutdown(2) of the write side (the peer reads end of stream).
  static func shutdownWrite(_ fd: Int32) throws(IOError) {
    _ = try retrying(.shutdown, "shutdown") { Int(Glibc.shutdown(fd, Int32(SHUT_WR))) }
  }

  // MARK: epoll

  static func epollCreate() throws(IOError) -> Int32 {
    Int32(try retrying(.epollCreate, "epoll_create1") { Int(epoll_create1(Int32(EPOLL_CLOEXEC))) })
  }

  /// epoll_ctl(EPOLL_CTL_ADD). False when that file is already in the set
  /// under this number (EEXIST): a value, the caller decides.
  static func epollAdd(_ epfd: Int32, _ fd: Int32, _ event: inout epoll_event) throws(IOError) -> Bool {
    let (_, code) = outcome(.epollCtl) { Int(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event)) }
    if code == EEXIST { return false }
    if code != 0 { throw IOError("epoll_ctl(ADD)", code) }
    return true
  }

  /// epoll_ctl(EPOLL_CTL_MOD).
  static func epollModify(_ epfd: Int32, _ fd: Int32, _ event: inout epoll_event) throws(IOError) {
    _ = try retrying(.epollCtl, "epoll_ctl(MOD)") { Int(epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event)) }
  }

  /// epoll_ctl(EPOLL_CTL_DEL).
  static func epollDelete(_ epfd: Int32, _ fd: Int32) throws(IOError) {
    var unused = epoll_event()
    _ = try retrying(.epollCtl, "epoll_ctl(DEL)") { Int(epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &unused)) }
  }

  /// epoll_pwait2(2) up to `timeout` (nil: no limit); the events ready. A
  /// signal (EINTR) is 0 events, not retried: the caller recomputes its
  /// timeout.
  static func epollWait2(_ epfd: Int32, _ events: inout [epoll_event], timeout: timespec?) throws(IOError) -> Int {
    let (value, code) = attempt(.epollWait, negated: false) {
      events.withUnsafeMutableBufferPointer { buffer -> Int in
        if var limit = timeout {
          return Int(epoll_pwait2(epfd, buffer.baseAddress, Int32(buffer.count), &limit, nil))
        }
        return Int(epoll_pwait2(epfd, buffer.baseAddress, Int32(buffer.count), nil, nil))
      }
    }
    if code == EINTR { return 0 }
    if code != 0 { throw IOError("epoll_pwait2", code) }
    return value
  }

  /// epoll_wait(2) up to `milliseconds` (-1: no limit), for kernels and
  /// sandboxes that refuse epoll_pwait2; EINTR as in ``epollWait2(_:_:timeout:)``.
  static func epollWait(_ epfd: Int32, _ events: inout [epoll_event], milliseconds: Int32) throws(IOError) -> Int {
    let (value, code) = attempt(.epollWaitFallback, negated: false) {
      events.withUnsafeMutableBufferPointer {
        Int(epoll_wait(epfd, $0.baseAddress, Int32($0.count), milliseconds))
      }
    }
    if code == EINTR { return 0 }
    if code != 0 { throw IOError("epoll_wait", code) }
    return value
  }

  // MARK: io_uring (the shim, which returns -errno)

  /// io_uring_setup: a ring of `entries`, created with the first of
  /// `flagChoices` the kernel accepts (EINVAL tries the next).
  static func ringCreate(entries: UInt32, flagChoices: [UInt32]) throws(IOError) -> OpaquePointer {
    if let code = injected(.uringSetup) { throw IOError("io_uring_setup", code) }
    var error: Int32 = 0
    for flags in flagChoices {
      if let ring = up_ring_create(entries, flags, &error) { return ring }
      if error != -EINVAL { break }
    }
    throw IOError("io_uring_setup", -error)
  }

  /// Unmaps the ring and closes its fd.
  static func ringDestroy(_ ring: OpaquePointer) { up_ring_destroy(ring) }

  /// io_uring_register(IORING_REGISTER_ENABLE_RINGS), on the thread that
  /// becomes the ring's submitter.
  static func ringEnable(_ ring: OpaquePointer) throws(IOError) {
    _ = try retrying(.uringEnable, "io_uring_register(ENABLE_RINGS)", negated: true) { Int(up_ring_enable(ring)) }
  }

  /// Registers a ring of `count` provided buffers of `size` bytes as
  /// buffer group `group` (IORING_REGISTER_PBUF_RING).
  static func bufferRingCreate(
    _ ring: OpaquePointer, count: UInt32, size: UInt32, group: UInt16
  ) throws(IOError) -> OpaquePointer {
    if let code = injected(.uringBufferRing) { throw IOError("io_uring_register(PBUF_RING)", code) }
    var error: Int32 = 0
    guard let bufferRing = up_bufring_create(ring, count, size, group, &error) else {
      throw IOError("io_uring_register(PBUF_RING)", error < 0 ? -error : ENOMEM)
    }
    return bufferRing
  }

  /// Frees a provided-buffer ring's memory, after its ring was destroyed.
  static func bufferRingFree(_ bufferRing: OpaquePointer?) { up_bufring_free(bufferRing) }

  /// Queues one SQE with `prepare`, a shim call that returns 0 or -errno.
  /// False when the submission queue is full (EBUSY, a value: the caller
  /// submits and tries once more). An injected fault is a queue that stays
  /// full or broken: thrown.
  static func ringPrepare(_ prepare: () -> Int32) throws(IOError) -> Bool {
    if let code = injected(.uringGetSQE) { throw IOError("io_uring_get_sqe", code) }
    let rc = prepare()
    if rc == -EBUSY { return false }
    if rc < 0 { throw IOError("io_uring_get_sqe", -rc) }
    return true
  }

  /// io_uring_submit. False when the completion queue is full (EBUSY,
  /// EAGAIN: reap, then submit again).
  static func ringSubmit(_ ring: OpaquePointer) throws(IOError) -> Bool {
    let (_, code) = outcome(.uringSubmit, negated: true) { Int(up_ring_submit(ring)) }
    if code == EBUSY || code == EAGAIN { return false }
    if code != 0 { throw IOError("io_uring_submit", code) }
    return true
  }

  /// io_uring_enter: submits and waits for one completion, up to
  /// `microseconds` (negative: no limit). A timeout (ETIME) and a signal
  /// (EINTR, not retried: the caller recomputes its timeout) end the wait
  /// like a completion. False when the completion queue is full (EBUSY,
  /// EAGAIN: reap, then wait again).
  static func ringSubmitAndWait(_ ring: OpaquePointer, microseconds: Int) throws(IOError) -> Bool {
    let (_, code) = attempt(.uringEnter, negated: true) { Int(up_ring_submit_and_wait(ring, 1, microseconds)) }
    switch code {
    case 0, ETIME, EINTR: return true
    case EBUSY, EAGAIN: return false
    default: throw IOError("io_uring_enter", code)
    }
  }
}
