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
