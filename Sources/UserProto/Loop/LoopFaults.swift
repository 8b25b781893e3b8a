import Locking

/// Test hook: the one place where the loop's system calls are made to fail.
///
/// Both engines ask it before each of the calls below, and report the
/// injected errno exactly as if the kernel had returned it. A loop gets its
/// own instance through ``EventLoop/Configuration``, so tests running in
/// parallel do not see each other's faults. SPI for the project's own test
/// programs (`@_spi(Testing) import UserProto`), not a stable API.
@_spi(Testing) public final class LoopFaults: Sendable {
  /// A system call of the loop's engines that a fault can be injected into.
  public enum Call: Hashable, Sendable {
    /// `io_uring_setup`.
    case uringSetup
    /// `io_uring_register(IORING_REGISTER_ENABLE_RINGS)`, on the loop thread.
    case uringEnable
    /// `io_uring_enter` (submit and wait).
    case uringEnter
    /// Taking an SQE: a full submission queue that flushing does not free.
    case uringGetSQE
    /// The opcode probe: the named opcode is reported missing.
    case uringProbe(opcode: String)
    /// A multishot request the kernel refuses with EINVAL (poll, accept or
    /// recv): its first completion is replaced by `-errno`.
    case uringMultishot
    /// `epoll_ctl` (ADD, MOD, DEL).
    case epollCtl
    /// `epoll_pwait2`.
    case epollWait
  }

  private struct Fault {
    var code: Int32
    var remaining: Int
    var skip: Int
  }
  private let faults = Lock<[Call: Fault]>([:])

  /// No faults: every call goes through until one is injected.
  public init() {}

  /// Makes `times` calls (`Int.max`: every call) fail with `code`, after
  /// letting `after` calls through.
  public func inject(_ call: Call, _ code: Int32, times: Int = 1, after: Int = 0) {
    faults.withLock { $0[call] = Fault(code: code, remaining: times, skip: after) }
  }

  /// Lets every further `call` through.
  public func clear(_ call: Call) { faults.withLock { $0[call] = nil } }

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
      table[call] = fault.remaining > 0 ? fault : nil
      return fault.code
    }
  }
}

extension Optional where Wrapped == LoopFaults {
  /// The errno to fail this call with, if faults are injected at all.
  func take(_ call: LoopFaults.Call) -> Int32? { self?.take(call) }
}
