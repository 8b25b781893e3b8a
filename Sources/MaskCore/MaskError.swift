import Glibc

/// Errors from mask fds. Every one leaves the mask fd's state unchanged.
public enum MaskError: Error, Hashable, Sendable {
  /// Bits outside POLLIN|POLLPRI|POLLOUT|POLLERR|POLLHUP were given.
  case invalidEvents(UInt32)
  /// The backend cannot show this combination exactly, or cannot reach it
  /// from the current state (hang-up is terminal on the emulation).
  case unsupported(MaskEvents, backend: String, reason: String)
  /// The mask fd was closed.
  case closed
  /// The requested backend is not available on this kernel.
  case backendUnavailable(MaskBackendKind, reason: String)
  /// A system call failed.
  case system(operation: String, errno: Int32)
}

extension MaskError: CustomStringConvertible {
  public var description: String {
    switch self {
    case .invalidEvents(let bits):
      return "invalid event bits 0x\(String(bits, radix: 16)): only POLLIN|POLLPRI|POLLOUT|POLLERR|POLLHUP are allowed"
    case .unsupported(let events, let backend, let reason):
      return "the \(backend) backend cannot show \(events): \(reason)"
    case .closed:
      return "the mask fd is closed"
    case .backendUnavailable(let kind, let reason):
      return "the \(kind) backend is unavailable: \(reason)"
    case .system(let operation, let code):
      return "\(operation) failed: \(errnoName(code)) (\(String(cString: strerror(code))))"
    }
  }

  /// True when the process or system ran out of file descriptors.
  public var isDescriptorLimit: Bool {
    if case .system(_, let code) = self { return code == EMFILE || code == ENFILE }
    return false
  }
}

/// The symbolic name of an errno value, for messages.
func errnoName(_ code: Int32) -> String {
  switch code {
  case EPERM: "EPERM"
  case ENOENT: "ENOENT"
  case EINTR: "EINTR"
  case EBADF: "EBADF"
  case EAGAIN: "EAGAIN"
  case ENOMEM: "ENOMEM"
  case EACCES: "EACCES"
  case EFAULT: "EFAULT"
  case EINVAL: "EINVAL"
  case ENFILE: "ENFILE"
  case EMFILE: "EMFILE"
  case ENOSYS: "ENOSYS"
  case EPIPE: "EPIPE"
  case ECONNRESET: "ECONNRESET"
  case ECONNREFUSED: "ECONNREFUSED"
  case ENOTCONN: "ENOTCONN"
  case EADDRINUSE: "EADDRINUSE"
  case ENOBUFS: "ENOBUFS"
  default: "errno \(code)"
  }
}
