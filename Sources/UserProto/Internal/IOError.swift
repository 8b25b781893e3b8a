import Glibc

/// A failed system call or I/O operation, with its errno.
public struct IOError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What failed, e.g. `"connect"` or `"io_uring_setup"`.
  public let operation: String
  /// The errno value.
  public let code: Int32

  /// Creates an error for `operation` failing with errno `code`.
  public init(_ operation: String, _ code: Int32) {
    self.operation = operation
    self.code = code
  }

  /// `OPERATION failed: ENAME (strerror text)`.
  public var description: String {
    "\(operation) failed: \(IOError.name(code)) (\(IOError.message(code)))"
  }

  /// True for ECANCELED: the operation was cancelled.
  public var isCancellation: Bool { code == ECANCELED }

  static func message(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    var bytes: [UInt8] = []
    var p = text
    while p.pointee != 0 {
      bytes.append(UInt8(bitPattern: p.pointee))
      p += 1
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  static func name(_ code: Int32) -> String {
    switch code {
    case EPERM: "EPERM"
    case EINTR: "EINTR"
    case EBADF: "EBADF"
    case EAGAIN: "EAGAIN"
    case ENOMEM: "ENOMEM"
    case EACCES: "EACCES"
    case EBUSY: "EBUSY"
    case EINVAL: "EINVAL"
    case ENFILE: "ENFILE"
    case EMFILE: "EMFILE"
    case ENOSYS: "ENOSYS"
    case EPIPE: "EPIPE"
    case ECANCELED: "ECANCELED"
    case ECONNRESET: "ECONNRESET"
    case ECONNREFUSED: "ECONNREFUSED"
    case ECONNABORTED: "ECONNABORTED"
    case ENOTCONN: "ENOTCONN"
    case ETIMEDOUT: "ETIMEDOUT"
    case EADDRINUSE: "EADDRINUSE"
    case EHOSTUNREACH: "EHOSTUNREACH"
    case ENOBUFS: "ENOBUFS"
    case EMSGSIZE: "EMSGSIZE"
    case EPROTO: "EPROTO"
    default: "errno \(code)"
    }
  }
}

/// Errors of the event loop itself.
public enum LoopError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The loop has shut down (or is shutting down): it takes no more work.
  case shutDown
  /// A loop-confined method was called from another thread.
  case notOnLoop(String)

  /// A sentence saying what went wrong.
  public var description: String {
    switch self {
    case .shutDown: "the event loop is shut down"
    case .notOnLoop(let what): "\(what) must be called on the event loop's thread"
    }
  }
}
