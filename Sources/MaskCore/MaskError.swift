import Glibc

/// Errors from mask fds.
///
/// Every error but ``system(operation:errno:)`` is raised before anything
/// changes. When a system call fails part-way through a transition on the
/// emulation, the data is put back and ``MaskFD/get()`` reports the events
/// the fd really shows (never a state it does not have).
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
  /// This process is a fork()ed child of the one that created the mask fd.
  /// The fd is shared with the parent, so changing it here would make the
  /// parent's record of the state wrong; read it with
  /// ``MaskFD/inspect(descriptor:)`` instead.
  case forkedChild
  /// A setting (such as the `MASKCORE_BACKEND` environment variable) has a
  /// value MaskCore does not know.
  case invalidConfiguration(String)
}

extension MaskError: CustomStringConvertible {
  /// A sentence naming what failed; a system call's errno by its C name and its strerror(3) text.
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
      return "\(operation) failed: \(errnoDescription(code))"
    case .forkedChild:
      return
        "this mask fd was created before fork(): the child shares it with the parent and may not change it (read it with MaskFD.inspect(descriptor:), or create mask fds after fork)"
    case .invalidConfiguration(let what):
      return "invalid configuration: \(what)"
    }
  }

  /// True when the process or system ran out of file descriptors.
  public var isDescriptorLimit: Bool {
    if case .system(_, let code) = self { return code == EMFILE || code == ENFILE }
    return false
  }
}

/// The symbolic name of an errno value (`"ECONNRESET"`), for messages: the
/// package's one errno name table (UserProto's `IOError` uses it too).
/// Linux values; a value it does not know is `"errno N"`.
package func errnoName(_ code: Int32) -> String {
  switch code {
  case EPERM: "EPERM"
  case ENOENT: "ENOENT"
  case EINTR: "EINTR"
  case EIO: "EIO"
  case EBADF: "EBADF"
  case EAGAIN: "EAGAIN"
  case ENOMEM: "ENOMEM"
  case EACCES: "EACCES"
  case EFAULT: "EFAULT"
  case EBUSY: "EBUSY"
  case EEXIST: "EEXIST"
  case EXDEV: "EXDEV"
  case ENODEV: "ENODEV"
  case EINVAL: "EINVAL"
  case ENFILE: "ENFILE"
  case EMFILE: "EMFILE"
  case ENOSPC: "ENOSPC"
  case EPIPE: "EPIPE"
  case ENAMETOOLONG: "ENAMETOOLONG"
  case ENOSYS: "ENOSYS"
  case ETIME: "ETIME"
  case EPROTO: "EPROTO"
  case EMSGSIZE: "EMSGSIZE"
  case EOPNOTSUPP: "EOPNOTSUPP"
  case EAFNOSUPPORT: "EAFNOSUPPORT"
  case EADDRINUSE: "EADDRINUSE"
  case EADDRNOTAVAIL: "EADDRNOTAVAIL"
  case ENETUNREACH: "ENETUNREACH"
  case ECONNABORTED: "ECONNABORTED"
  case ECONNRESET: "ECONNRESET"
  case ENOBUFS: "ENOBUFS"
  case ENOTCONN: "ENOTCONN"
  case ETIMEDOUT: "ETIMEDOUT"
  case ECONNREFUSED: "ECONNREFUSED"
  case EHOSTUNREACH: "EHOSTUNREACH"
  case EALREADY: "EALREADY"
  case EINPROGRESS: "EINPROGRESS"
  case ECANCELED: "ECANCELED"
  default: "errno \(code)"
  }
}

/// An errno value for a message: its name and the C library's text, as in
/// `"ECONNRESET (Connection reset by peer)"`.
package func errnoDescription(_ code: Int32) -> String {
  "\(errnoName(code)) (\(String(cString: strerror(code))))"
}
