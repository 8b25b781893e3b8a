import Locking
public import UserProto

/// The connections a server lost to an error (refused peers, protocol
/// violations, resets): how many, and the reasons of the last few.
///
/// A server records each connection's first failure only. Safe from any
/// thread.
public final class FailureLog: Sendable {
  /// Reasons kept by default.
  public static let defaultCapacity = 16
  /// The most reasons kept; older ones are forgotten (the count goes on).
  public let capacity: Int
  private let state = Lock<(total: Int, recent: [SocketError])>((0, []))

  /// An empty log keeping the last `capacity` reasons (at least one).
  public init(capacity: Int = FailureLog.defaultCapacity) {
    self.capacity = max(1, capacity)
  }

  /// Connections that failed so far.
  public var count: Int { state.withLock { $0.total } }

  /// The reasons of the last ``capacity`` failures, oldest first.
  public var recent: [SocketError] { state.withLock { $0.recent } }

  /// The failures after the first `seen` (for printing new ones as they
  /// come): the reasons still kept, and how many were forgotten meanwhile.
  public func failures(after seen: Int) -> (reasons: [SocketError], forgotten: Int, count: Int) {
    state.withLock { s in
      let new = max(0, s.total - seen)
      let kept = min(new, s.recent.count)
      return (Array(s.recent.suffix(kept)), new - kept, s.total)
    }
  }

  func record(_ error: SocketError) {
    state.withLock { s in
      s.total += 1
      s.recent.append(error)
      if s.recent.count > capacity { s.recent.removeFirst(s.recent.count - capacity) }
    }
  }
}
