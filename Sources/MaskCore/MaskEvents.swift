/// A set of readiness events, with the raw values of the poll(2) bits.
///
/// These are exactly the events a mask fd can report: any combination of
/// them, including none at all (neither readable nor writable).
public struct MaskEvents: OptionSet, Hashable, Sendable {
  /// The poll(2) bits, as in `pollfd.revents`.
  public let rawValue: UInt32

  /// Creates a set from raw poll(2) bits, unchecked; ``init(validating:)`` refuses stray bits.
  public init(rawValue: UInt32) { self.rawValue = rawValue }

  /// Data can be read. The corresponding C constant is `POLLIN` (0x001).
  public static let readable = MaskEvents(rawValue: 0x001)
  /// Urgent or priority data. The corresponding C constant is `POLLPRI` (0x002).
  public static let priority = MaskEvents(rawValue: 0x002)
  /// Writing would not block. The corresponding C constant is `POLLOUT` (0x004).
  public static let writable = MaskEvents(rawValue: 0x004)
  /// An error is pending. The corresponding C constant is `POLLERR` (0x008).
  public static let error = MaskEvents(rawValue: 0x008)
  /// Hang-up: the other side is gone. The corresponding C constant is `POLLHUP` (0x010).
  public static let hangup = MaskEvents(rawValue: 0x010)

  /// Every event a mask fd can carry.
  public static let all: MaskEvents = [.readable, .priority, .writable, .error, .hangup]

  /// Validates raw poll bits: any bit outside ``all`` is an error.
  /// - Throws: ``MaskError/invalidEvents(_:)`` naming the stray bits.
  public init(validating rawValue: UInt32) throws(MaskError) {
    guard rawValue & ~MaskEvents.all.rawValue == 0 else {
      throw .invalidEvents(rawValue & ~MaskEvents.all.rawValue)
    }
    self.init(rawValue: rawValue)
  }

  /// Every one of the 32 combinations, in ascending raw order.
  public static var allCombinations: [MaskEvents] {
    // The five poll bits are contiguous (0x01...0x10).
    (0..<32).map { MaskEvents(rawValue: UInt32($0)) }
  }
}

extension MaskEvents: CustomStringConvertible {
  /// The C names joined with `|`, or `none`: `POLLIN|POLLOUT`.
  public var description: String {
    if isEmpty { return "none" }
    var names: [String] = []
    if contains(.readable) { names.append("POLLIN") }
    if contains(.priority) { names.append("POLLPRI") }
    if contains(.writable) { names.append("POLLOUT") }
    if contains(.error) { names.append("POLLERR") }
    if contains(.hangup) { names.append("POLLHUP") }
    let stray = rawValue & ~MaskEvents.all.rawValue
    if stray != 0 { names.append("0x" + String(stray, radix: 16)) }
    return names.joined(separator: "|")
  }
}

/// The state of a mask fd: its events and 64 bits of opaque data, as the
/// seed's `struct efd_mask`.
public struct MaskState: Hashable, Sendable {
  /// The events the fd reports.
  public var events: MaskEvents
  /// The opaque 64-bit value stored with the events.
  public var data: UInt64

  /// Creates a state from its events and data (0 unless given).
  public init(events: MaskEvents, data: UInt64 = 0) {
    self.events = events
    self.data = data
  }
}
