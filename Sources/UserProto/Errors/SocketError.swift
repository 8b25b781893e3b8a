import Glibc
import MaskCore

/// Errors a protocol socket reports.
public enum SocketError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The socket was closed (or aborted) by this side: use after close.
  case closed
  /// The write side was shut down (`shutdownWrite()` or `close()`).
  case writeShutdown
  /// The connection failed at the transport: reset, refused, timed out...
  case transport(IOError)
  /// The peer spoke the protocol wrongly: a malformed frame, a bad header.
  case protocolViolation(String)
  /// A message exceeded the maximum message size.
  case messageTooLarge(size: Int, limit: Int)
  /// The peer closed the connection while this side expected more.
  case peerVanished
  /// The socket type does not do this (e.g. a SUB socket sending).
  case notSupported(String)
  /// A dial or listen address that cannot be used: the URL and why.
  case badAddress(String, String)
  /// A loop-confined operation (a handler's context, a pipe) was called
  /// off its socket's event loop, or after the callback that lent it.
  case notOnLoop(String)

  /// A sentence saying what went wrong.
  public var description: String {
    switch self {
    case .closed: "the socket is closed"
    case .writeShutdown: "the socket's write side is shut down"
    case .transport(let error): "transport error: \(error)"
    case .protocolViolation(let what): "protocol violation: \(what)"
    case .messageTooLarge(let size, let limit): "message of \(size) bytes exceeds the limit of \(limit) bytes"
    case .peerVanished: "the peer vanished"
    case .notSupported(let what): "not supported: \(what)"
    case .badAddress(let url, let why): "bad address \(url): \(why)"
    case .notOnLoop(let what): "\(what) must be called on the socket's event loop"
    }
  }
}

extension SocketError {
  /// The mask fd could not be written (`what` names whose): a transport
  /// error carrying the mask error's errno (EIO when it has none).
  static func maskUpdateFailed(_ error: MaskError, _ what: String) -> SocketError {
    let code: Int32
    if case .system(_, let errno) = error { code = errno } else { code = EIO }
    return .transport(IOError("\(what) (\(error))", code))
  }
}
