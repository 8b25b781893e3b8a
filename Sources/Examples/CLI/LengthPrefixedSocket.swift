import UserProto

/// The smallest useful protocol: each message is a 4-byte big-endian length
/// followed by that many bytes. The tutorial in docs/ walks through a richer
/// one (the SP echo protocol); this one keeps the mixed-poll example short.
final class LengthPrefixedSocket: ProtocolSocket, @unchecked Sendable {
  private var buffer: [UInt8] = []

  override func received(_ bytes: [UInt8]) throws {
    buffer += bytes
    while buffer.count >= 4 {
      let length = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
      if length > options.maximumMessageSize {
        throw SocketError.messageTooLarge(size: length, limit: options.maximumMessageSize)
      }
      guard buffer.count >= 4 + length else { return }
      try deliver(Array(buffer[4..<(4 + length)]))
      buffer.removeFirst(4 + length)
    }
  }

  override func receivedEndOfStream() throws {
    if !buffer.isEmpty { throw SocketError.peerVanished }
  }

  override func encode(_ message: [UInt8]) throws -> [UInt8] {
    let n = message.count
    return [UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + message
  }
}
