import Glibc
import MaskCore
public import SystemPackage

/// A failed system call or I/O operation, with its errno.
///
/// ``errno`` gives the errno with its Swift name (swift-system's `Errno`:
/// `error.errno == .connectionReset`); ``code`` is the same value as C has
/// it (`error.code == ECONNRESET`).
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

  /// An error of `operation` with a typed errno, e.g. `IOError("send", .brokenPipe)`.
  public init(_ operation: String, _ errno: Errno) {
    self.init(operation, errno.rawValue)
  }

  /// The errno, typed, with its Swift name (`.connectionReset`,
  /// `.tooManyOpenFiles`, `.wouldBlock`...).
  public var errno: Errno { Errno(rawValue: code) }

  /// `"connect failed: ECONNREFUSED (Connection refused)"`: the errno's
  /// name from MaskCore's table and the C library's text.
  public var description: String { "\(operation) failed: \(errnoDescription(code))" }

  /// True for ECANCELED: the operation was cancelled.
  public var isCancellation: Bool { code == ECANCELED }
}
