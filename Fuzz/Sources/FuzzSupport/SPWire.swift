/// The SP wire format written out independently of the code under test
/// (the SP RFCs: sp-tcp-mapping-01, sp-ipc-mapping, sp-request-reply-01),
/// for the peers to write with and the models to read with.
public enum SPWire {
  /// The 8-byte header of protocol `id`: `00 'S' 'P' 00`, the id, `00 00`.
  public static func header(_ id: UInt16) -> [UInt8] {
    [0x00, 0x53, 0x50, 0x00, UInt8(id >> 8), UInt8(id & 0xFF), 0x00, 0x00]
  }

  /// A 32-bit big-endian word.
  public static func word(_ value: UInt32) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32($0))) }
  }

  /// The big-endian word at `offset`, or nil past the end.
  public static func word(in bytes: [UInt8], at offset: Int) -> UInt32? {
    guard offset >= 0, bytes.count - offset >= 4 else { return nil }
    return (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[offset + $1]) }
  }

  /// The big-endian 64-bit length at `offset`, or nil past the end.
  public static func length(in bytes: [UInt8], at offset: Int) -> UInt64? {
    guard offset >= 0, bytes.count - offset >= 8 else { return nil }
    return (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[offset + $1]) }
  }

  /// The prefix of a frame: SP/IPC's message type 1, then the length.
  public static func prefix(length: UInt64, ipc: Bool) -> [UInt8] {
    (ipc ? [0x01] : []) + (0..<8).map { UInt8(truncatingIfNeeded: length >> (56 - 8 * UInt64($0))) }
  }

  /// One well-formed frame of `body`.
  public static func frame(_ body: [UInt8], ipc: Bool) -> [UInt8] {
    prefix(length: UInt64(body.count), ipc: ipc) + body
  }

  /// What an SP socket wrote on a stream: its header once 8 bytes are
  /// there, then the complete well-formed frames after it.
  public static func parse(_ stream: [UInt8], ipc: Bool) -> (header: [UInt8]?, messages: [[UInt8]]) {
    guard stream.count >= 8 else { return (nil, []) }
    var messages: [[UInt8]] = []
    var offset = 8
    let prefixLength = ipc ? 9 : 8
    while stream.count - offset >= prefixLength {
      if ipc && stream[offset] != 0x01 { break }
      guard let length = SPWire.length(in: stream, at: offset + prefixLength - 8),
        length <= UInt64(stream.count - offset - prefixLength)
      else { break }
      let start = offset + prefixLength
      messages.append(Array(stream[start..<(start + Int(length))]))
      offset = start + Int(length)
    }
    return (Array(stream[0..<8]), messages)
  }
}
