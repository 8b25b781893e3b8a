public import Logging

/// The logger of every socket and event loop made without one: it logs
/// nothing (docs/logging.md). A log site then costs one level check, as the
/// no-op handler's level is `.critical` and the library logs nothing that
/// severe; the message and metadata autoclosures are never run.
@usableFromInline
enum DisabledLogger {
  @usableFromInline
  static let shared = Logger(label: "userproto", factory: { _ in SwiftLogNoOpLogHandler() })
}

extension Duration {
  /// The duration in milliseconds, with fractions (a log metadata value).
  var inMilliseconds: Double {
    let (seconds, attoseconds) = components
    return Double(seconds) * 1e3 + Double(attoseconds) / 1e15
  }
}
