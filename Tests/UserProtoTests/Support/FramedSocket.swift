import UserProto

/// A small test protocol: each message is a 4-byte big-endian length and the
/// payload. A length with the top bit set is malformed.
final class FramedSocket: ProtocolSocket, @unchecked Sendable {
  private var buffer: [UInt8] = []

  override func received(_ bytes: [UInt8]) throws {
    buffer += bytes
    while buffer.count >= 4 {
      let length = buffer[0..<4].reduce(0) { $0 << 8 | Int($1) }
      if length & 0x8000_0000 != 0 { throw SocketError.protocolViolation("length with the top bit set") }
      if length > options.maximumMessageSize {
        throw SocketError.messageTooLarge(size: length, limit: options.maximumMessageSize)
      }
      guard buffer.count >= 4 + length else { return }
      try deliver(Array(buffer[4..<(4 + length)]))
      buffer.removeFirst(4 + length)
    }
  }

  override func receivedEndOfStream() throws {
    if !buffer.isEmpty { throw SocketError.peerVanished }  // a frame was cut short
  }

  override func encode(_ message: [UInt8]) throws -> [UInt8] {
    let n = UInt32(message.count)
    return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + message
  }
}

/// Frames `payload` the way FramedSocket does, for raw peers.
func frame(_ payload: [UInt8]) -> [UInt8] {
  let n = UInt32(payload.count)
  return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
}
