import Locking
import Synchronization

/// Test hook: a table of system calls made to fail, which ``Sys`` (the one
/// place UserProto calls the kernel) asks before each call.
///
/// An injected errno is reported exactly as if the kernel had returned it:
/// an injected EINTR is retried, an EAGAIN is "would block". A table
/// applies to the calls made on the task or thread it is bound to: a loop
/// binds its own (``EventLoop/Configuration/faults``) on its thread for its
/// whole life and around its engine's set-up, and a socket's listen binds
/// its loop's table around the calls it makes on the caller's thread; a
/// test binds one for its own calls with ``whileCurrent(_:)``. So tests
/// running in parallel do not see each other's faults. While no table holds
/// a fault, a call pays one relaxed atomic load for this.
///
/// SPI for the project's own test programs (`@_spi(Testing) import
/// UserProto`), not a stable API.
@_spi(Testing) public final class LoopFaults: Sendable {
  /// A call that can be made to fail. Where an io_uring operation makes no
  /// system call of its own (accept, connect, send, receive), its call's
  /// fault refuses the submission: the operation completes with the errno
  /// at the next reap, as if the kernel had refused it.
  public enum Call: Hashable, Sendable {
    /// `io_uring_setup`.
    case uringSetup
    /// `io_uring_register(IORING_REGISTER_ENABLE_RINGS)`, on the loop thread.
    case uringEnable
    /// `io_uring_register(IORING_REGISTER_PBUF_RING)`: the provided
    /// buffers (multishot receive is then not used).
    case uringBufferRing
    /// `io_uring_enter` (submit and wait).
    case uringEnter
    /// `io_uring_submit` without waiting (making room in a full submission
    /// queue, submitting a cancel at once).
    case uringSubmit
    /// Taking an SQE: a full submission queue that flushing does not free.
    case uringGetSQE
    /// The opcode probe: the named opcode is reported missing.
    case uringProbe(opcode: String)
    /// A multishot request the kernel refuses with EINVAL (poll, accept or
    /// recv): its first completion is replaced by `-errno`.
    case uringMultishot
    /// `epoll_create1`.
    case epollCreate
    /// `epoll_ctl` (ADD, MOD, DEL).
    case epollCtl
    /// `epoll_pwait2`.
    case epollWait
    /// `epoll_wait`, which the engine uses once `epoll_pwait2` was refused.
    case epollWaitFallback
    /// `eventfd2`: the loop's wake-up fd.
    case eventfd
    /// `read(2)` of the wake-up eventfd (epoll).
    case wakeRead
    /// `poll(2)`: epoll's readiness probe when a watch starts, and the
    /// engine's back-off pause.
    case poll
    /// `fstat(2)`: io_uring's check for an fd number reused by another file.
    case fstat
    /// `socket(2)`.
    case socket
    /// `bind(2)`.
    case bind
    /// `listen(2)`.
    case listen
    /// `setsockopt(2)` (SO_REUSEADDR, TCP_NODELAY, SO_LINGER).
    case setsockopt
    /// `getsockopt(2)` (SO_ERROR after a connect, SO_SNDBUF).
    case getsockopt
    /// `getsockname(2)` and `getpeername(2)`.
    case socketName
    /// `accept4(2)` (epoll); the ACCEPT submission (io_uring).
    case accept
    /// `connect(2)` (epoll, and UDP's on both); the CONNECT submission (io_uring).
    case connect
    /// `send(2)` and `sendto(2)` (epoll); the SEND and SENDMSG submissions (io_uring).
    case send
    /// `recv(2)` and `recvfrom(2)` (epoll); the RECV and RECVMSG submissions (io_uring).
    case receive
    /// `shutdown(2)`.
    case shutdown
    /// `unlink(2)` of a Unix-domain listener's socket file.
    case unlink
  }

  private struct Fault {
    var code: Int32
    var remaining: Int
    var skip: Int
  }
  private let faults = Lock<[Call: Fault]>([:])

  /// Tables holding at least one fault, in the whole process: while it is
  /// 0, ``Sys`` skips the table lookup (one relaxed load per call).
  static let armedTables = Atomic<Int>(0)

  /// The table bound to the calling task or thread.
  @TaskLocal static var current: LoopFaults? = nil

  /// No faults: every call goes through until one is injected.
  public init() {}

  deinit {
    if !faults.withLock({ $0.isEmpty }) { LoopFaults.armedTables.subtract(1, ordering: .relaxed) }
  }

  /// Makes `times` calls (`Int.max`: every call) fail with `code`, after
  /// letting `after` calls through.
  public func inject(_ call: Call, _ code: Int32, times: Int = 1, after: Int = 0) {
    faults.withLock { table in
      if table.isEmpty { LoopFaults.armedTables.add(1, ordering: .relaxed) }
      table[call] = Fault(code: code, remaining: times, skip: after)
    }
  }

  /// Lets every further `call` through.
  public func clear(_ call: Call) {
    faults.withLock { table in
      guard table.removeValue(forKey: call) != nil, table.isEmpty else { return }
      LoopFaults.armedTables.subtract(1, ordering: .relaxed)
    }
  }

  /// True while a fault injected for `call` has calls left to fail (a
  /// test's check that the call was made).
  public func isArmed(_ call: Call) -> Bool { faults.withLock { $0[call] != nil } }

  /// close(2) calls of the library, process-wide, that found no open fd
  /// (EBADF: an fd closed twice, an ownership bug); the leak checks expect 0.
  public static var badCloses: Int { Sys.badCloses.load(ordering: .relaxed) }

  /// Runs `body` with this table applying to the calls made on the calling
  /// task (or thread), as a loop's table applies on its thread.
  public func whileCurrent<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
    try LoopFaults.binding(self, body)
  }

  /// Runs `body` with `table` bound to the calling task (or thread); with
  /// nil, the binding already there (if any) stays.
  static func binding<R, E: Error>(_ table: LoopFaults?, _ body: () throws(E) -> R) throws(E) -> R {
    guard let table else { return try body() }
    let result: Result<R, E> = $current.withValue(table) { Result { () throws(E) -> R in try body() } }
    return try result.get()
  }

  /// The errno to fail this call with, if one was injected.
  func take(_ call: Call) -> Int32? {
    faults.withLock { table -> Int32? in
      guard var fault = table[call] else { return nil }
      if fault.skip > 0 {
        fault.skip -= 1
        table[call] = fault
        return nil
      }
      fault.remaining -= 1
      if fault.remaining > 0 {
        table[call] = fault
      } else {
        table[call] = nil
        if table.isEmpty { LoopFaults.armedTables.subtract(1, ordering: .relaxed) }
      }
      return fault.code
    }
  }
}
