/// The messages of one run: a 64-bit big-endian sequence number from 0, the
/// run's 64-bit stream id, then padding to the size asked for (at least 16
/// bytes). A receiver tells duplicates, gaps and reordering from the
/// sequence numbers, and a second run from the stream id.
struct StreamMessages {
  /// The smallest message: the sequence number and the stream id.
  static let headerSize = 16

  let streamID: UInt64
  let size: Int
  private let template: [UInt8]

  init(size: Int) {
    streamID = UInt64.random(in: 1...UInt64.max)
    self.size = max(size, StreamMessages.headerSize)
    var template = [UInt8](repeating: 0x2e, count: self.size)
    for i in 0..<8 { template[8 + i] = UInt8(truncatingIfNeeded: streamID >> UInt64(56 - 8 * i)) }
    self.template = template
  }

  /// Message number `sequence`.
  func message(_ sequence: UInt64) -> [UInt8] {
    var message = template
    for i in 0..<8 { message[i] = UInt8(truncatingIfNeeded: sequence >> UInt64(56 - 8 * i)) }
    return message
  }

  /// The sequence number and stream id of `message`, or nil when it is too
  /// short to be one of ours.
  static func decode(_ message: [UInt8]) -> (sequence: UInt64, stream: UInt64)? {
    guard message.count >= headerSize else { return nil }
    var sequence: UInt64 = 0
    var stream: UInt64 = 0
    for i in 0..<8 {
      sequence = sequence << 8 | UInt64(message[i])
      stream = stream << 8 | UInt64(message[8 + i])
    }
    return (sequence, stream)
  }
}

/// What a receiver saw of the sequence numbers: each one counted once
/// (``unique``), again (``duplicates``), after a higher one (``reordered``),
/// and which ones never came (``gaps`` between the lowest and the highest;
/// ``contiguousPrefix``: 0..<k all present).
struct SequenceTracker {
  /// Sequence numbers at or above this are counted as malformed rather than
  /// grow the table without bound.
  static let limit = 50_000_000

  private var seen: [Bool] = []
  private(set) var unique = 0
  private(set) var duplicates = 0
  private(set) var reordered = 0
  private(set) var malformed = 0
  private(set) var first = -1
  private(set) var lowest = -1
  private(set) var highest = -1
  private(set) var streams: Set<UInt64> = []

  mutating func record(_ message: [UInt8]) {
    guard let decoded = StreamMessages.decode(message), decoded.sequence < UInt64(SequenceTracker.limit) else {
      malformed += 1
      return
    }
    streams.insert(decoded.stream)
    let n = Int(decoded.sequence)
    if n >= seen.count { seen += repeatElement(false, count: max(n + 1 - seen.count, seen.count)) }
    if seen[n] {
      duplicates += 1
      return
    }
    seen[n] = true
    unique += 1
    if first < 0 { first = n }
    if n < highest { reordered += 1 }
    highest = max(highest, n)
    lowest = lowest < 0 ? n : min(lowest, n)
  }

  /// k such that 0..<k all came.
  var contiguousPrefix: Int {
    var k = 0
    while k < seen.count && seen[k] { k += 1 }
    return k
  }

  /// Sequence numbers between the lowest and the highest that never came.
  var gaps: Int { highest < 0 ? 0 : highest - lowest + 1 - unique }

  /// The fields a receiver prints.
  func add(to json: inout JSONLine) {
    json.add("delivered", unique)
    json.add("duplicates", duplicates)
    json.add("reordered", reordered)
    json.add("gaps", gaps)
    json.add("malformed", malformed)
    json.add("first_seq", first)
    json.add("lowest_seq", lowest)
    json.add("highest_seq", highest)
    json.add("contiguous_prefix", contiguousPrefix)
    json.add("streams", streams.count)
  }
}
