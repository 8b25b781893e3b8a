/// A fuzzer's input read as a stream of decisions.
///
/// Every read takes the next bytes; a read past the end gives zeros (and
/// an empty array for byte strings), so every input, however short, is a
/// complete program and the fuzzer's mutations stay meaningful: changing
/// one byte changes one decision.
public struct FuzzInput {
  private let bytes: [UInt8]
  private var offset = 0

  /// The input `bytes`, read from the start.
  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  /// True once every byte was read.
  public var isExhausted: Bool { offset >= bytes.count }

  /// Bytes not read yet.
  public var remaining: Int { max(0, bytes.count - offset) }

  /// The next byte (0 past the end).
  public mutating func byte() -> UInt8 {
    guard offset < bytes.count else { return 0 }
    defer { offset += 1 }
    return bytes[offset]
  }

  /// The low bit of the next byte.
  public mutating func bool() -> Bool { byte() & 1 == 1 }

  /// A big-endian unsigned integer of `T`'s width from the next bytes.
  public mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self) -> T {
    var value: T = 0
    for _ in 0..<MemoryLayout<T>.size { value = value << 8 | T(byte()) }
    return value
  }

  /// A value in `range`: one byte for a range of at most 256 values, two
  /// for at most 65,536, eight otherwise.
  public mutating func int(in range: ClosedRange<Int>) -> Int {
    let span = UInt64(bitPattern: Int64(range.upperBound &- range.lowerBound))
    let raw: UInt64
    if span < 256 {
      raw = UInt64(byte())
    } else if span < 65_536 {
      raw = UInt64(integer(UInt16.self))
    } else {
      raw = integer(UInt64.self)
    }
    let offset = span == .max ? raw : raw % (span + 1)
    return range.lowerBound &+ Int(truncatingIfNeeded: offset)
  }

  /// One of `choices` (which must not be empty).
  public mutating func pick<T>(_ choices: [T]) -> T {
    precondition(!choices.isEmpty, "FuzzInput.pick from no choices")
    return choices[int(in: 0...(choices.count - 1))]
  }

  /// The next `count` bytes, fewer at the end of the input.
  public mutating func bytes(_ count: Int) -> [UInt8] {
    let start = min(offset, bytes.count)
    let end = min(start + max(0, count), bytes.count)
    offset = max(offset, end)
    return Array(bytes[start..<end])
  }

  /// A byte string: one length byte (at most `maximum`), then its bytes.
  public mutating func blob(maximum: Int = 255) -> [UInt8] {
    bytes(int(in: 0...max(0, min(maximum, 255))))
  }

  /// Every byte not read yet.
  public mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// The bytes of one libFuzzer input (`LLVMFuzzerTestOneInput`'s arguments).
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
  guard let data, size > 0 else { return [] }
  return Array(UnsafeBufferPointer(start: data, count: size))
}
