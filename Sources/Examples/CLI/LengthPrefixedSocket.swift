import UserProto

/// The smallest useful protocol: each message is a 4-byte big-endian length
/// followed by that many bytes. The tutorial in docs/ walks through a richer
/// one (the SP echo protocol); this one keeps the mixed-poll example short.
final class LengthPrefixedSocket: ProtocolSocket, @unchecked Sendable {
  private var buffer: [UInt8] = []

  override func received(_ bytes: [UInt8]) throws {
    buffer += bytes
    // Parse from an offset and drop what was consumed once per call: a
    // removeFirst per frame would move the rest of the buffer each time.
    var offset = 0
    defer { buffer.removeFirst(offset) }
    while buffer.count - offset >= 4 {
      let length = buffer[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
      if length > options.maximumMessageSize {  // refuse before buffering it
        throw SocketError.messageTooLarge(size: length, limit: options.maximumMessageSize)
      }
      guard buffer.count - offset >= 4 + length else { return }
      try deliver(Array(buffer[(offset + 4)..<(offset + 4 + length)]))
      offset += 4 + length
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
