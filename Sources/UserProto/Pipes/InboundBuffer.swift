/// The bytes a pipe has received and its handler has not consumed yet.
///
/// The handler parses in place: it looks at ``readableBytes`` and the bytes
/// at offsets from the reader index, then consumes what it used with
/// ``moveReaderIndex(forwardBy:)`` or one of the `read` methods. Unconsumed
/// bytes stay for the next call, with the next chunk appended after them.
/// Nothing is copied per consumed message: the storage is compacted only
/// when the consumed prefix is at least half of it, and a chunk that
/// arrives while the buffer is empty is adopted without a copy.
@frozen
public struct InboundBuffer: Sendable {
  @usableFromInline var storage: [UInt8] = []
  @usableFromInline var readerIndex = 0

  /// An empty buffer.
  @inlinable
  public init() {}

  /// A buffer holding `bytes` (tests, and handlers that parse a message of
  /// their own with the same methods).
  @inlinable
  public init(_ bytes: [UInt8]) { storage = bytes }

  /// How many bytes are unconsumed.
  @inlinable
  public var readableBytes: Int { storage.count - readerIndex }

  /// True when every byte was consumed.
  @inlinable
  public var isEmpty: Bool { readerIndex == storage.count }

  /// The unconsumed byte at `offset` from the reader index.
  /// - Precondition: `offset < readableBytes`.
  @inlinable
  public subscript(offset: Int) -> UInt8 {
    precondition(offset >= 0 && offset < readableBytes, "InboundBuffer offset \(offset) out of \(readableBytes)")
    return storage[readerIndex + offset]
  }

  /// The big-endian unsigned integer of `T`'s width at `offset`, or nil
  /// when fewer bytes than that are readable there.
  @inlinable
  public func peekBigEndian<T: FixedWidthInteger & UnsignedInteger>(
    _: T.Type = T.self, at offset: Int = 0
  ) -> T? {
    let width = MemoryLayout<T>.size
    guard offset >= 0, readableBytes - offset >= width else { return nil }
    var value: T = 0
    let start = readerIndex + offset
    for i in start..<(start + width) { value = value << 8 | T(storage[i]) }
    return value
  }

  /// Consumes `count` bytes without looking at them.
  /// - Precondition: `count <= readableBytes`.
  @inlinable
  public mutating func moveReaderIndex(forwardBy count: Int) {
    precondition(count >= 0 && count <= readableBytes, "InboundBuffer: skipping \(count) of \(readableBytes)")
    readerIndex += count
    compactIfWorthIt()
  }

  /// Consumes and returns the next `count` bytes, or nil (consuming
  /// nothing) when fewer are readable.
  @inlinable
  public mutating func readBytes(_ count: Int) -> [UInt8]? {
    guard count >= 0, count <= readableBytes else { return nil }
    let bytes: [UInt8]
    if readerIndex == 0 && count == storage.count {
      bytes = storage  // the whole buffer: hand the storage over
      storage = []
    } else {
      bytes = Array(storage[readerIndex..<(readerIndex + count)])
      readerIndex += count
    }
    compactIfWorthIt()
    return bytes
  }

  /// Consumes and returns every readable byte.
  @inlinable
  public mutating func readAll() -> [UInt8] { readBytes(readableBytes) ?? [] }

  /// Calls `body` with the unconsumed bytes (valid only inside `body`).
  @inlinable
  public func withUnsafeReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[readerIndex...])) }
  }

  /// Appends a received chunk after the unconsumed bytes.
  mutating func append(_ chunk: [UInt8]) {
    if isEmpty {
      storage = chunk  // nothing pending: adopt the chunk, no copy
      readerIndex = 0
    } else {
      storage += chunk
    }
  }

  /// Drops everything (a datagram pipe after each datagram).
  mutating func removeAll() {
    storage = []
    readerIndex = 0
  }

  @usableFromInline
  mutating func compactIfWorthIt() {
    if readerIndex == storage.count {
      storage.removeAll(keepingCapacity: storage.count <= 64 * 1024)
      readerIndex = 0
    } else if readerIndex >= 4096 && readerIndex * 2 >= storage.count {
      storage.removeFirst(readerIndex)
      readerIndex = 0
    }
  }
}
