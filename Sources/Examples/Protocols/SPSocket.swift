public import UserProto

/// The nanomsg scalability protocols' TCP mapping (SP/TCP), shared by every
/// SP socket type.
///
/// Both sides send an 8-byte header at once (`00 'S' 'P' 00`, the 16-bit
/// big-endian protocol id, two zero bytes) without waiting for the peer's,
/// then exchange messages, each prefixed by its 64-bit big-endian length.
/// A wrong header (magic, version, reserved bytes or an incompatible
/// protocol id) fails the connection with a clear error, as does a frame
/// longer than the maximum message size; nothing else is affected.
open class SPSocket: ProtocolSocket, @unchecked Sendable {
  /// SP protocol ids.
  public enum ProtocolID: UInt16, Sendable {
    case pair = 0x10
    case pub = 0x20
    case sub = 0x21
    case req = 0x30
    case rep = 0x31
  }

  /// This socket's protocol id.
  open var protocolID: ProtocolID { fatalError("SPSocket subclasses override protocolID") }
  /// The only protocol id this socket accepts from its peer.
  open var peerProtocolID: ProtocolID { fatalError("SPSocket subclasses override peerProtocolID") }

  private final var buffer: [UInt8] = []
  private final var headerSeen = false
  private final var headerTimer: ProtocolTimer?
  /// How long the peer has to send its header (nng waits 10 s).
  public static let headerTimeout: Duration = .seconds(10)

  /// The 8 header bytes this side sends.
  public final var header: [UInt8] {
    let id = protocolID.rawValue
    return [0x00, 0x53, 0x50, 0x00, UInt8(id >> 8), UInt8(id & 0xff), 0x00, 0x00]
  }

  open override func connectionStateChanged(_ state: ConnectionState) {
    if state == .connected {
      writeRaw(header)
      headerTimer = try? startTimer(after: SPSocket.headerTimeout)
    }
  }

  open override func timerFired(_ timer: ProtocolTimer) {
    if timer === headerTimer, !headerSeen {
      fail(.protocolViolation("no SP header from the peer within \(SPSocket.headerTimeout)"))
    }
  }

  public final override func received(_ bytes: [UInt8]) throws {
    buffer += bytes
    if !headerSeen {
      guard buffer.count >= 8 else { return }
      try checkHeader(Array(buffer[0..<8]))
      headerSeen = true
      headerTimer?.cancel()
      buffer.removeFirst(8)
    }
    var offset = 0
    defer { if offset > 0 { buffer.removeFirst(offset) } }
    while buffer.count - offset >= 8 {
      var length: UInt64 = 0
      for i in 0..<8 { length = length << 8 | UInt64(buffer[offset + i]) }
      if length > UInt64(options.maximumMessageSize) {
        throw SocketError.messageTooLarge(
          size: length > UInt64(Int.max) ? Int.max : Int(length), limit: options.maximumMessageSize)
      }
      let end = offset + 8 + Int(length)
      guard buffer.count >= end else { return }
      let message = Array(buffer[(offset + 8)..<end])
      offset = end
      try receivedMessage(message)
    }
  }

  private final func checkHeader(_ h: [UInt8]) throws {
    guard h[0] == 0x00, h[1] == 0x53, h[2] == 0x50, h[3] == 0x00 else {
      throw SocketError.protocolViolation("not an SP peer: header \(hex(h))")
    }
    guard h[6] == 0, h[7] == 0 else {
      throw SocketError.protocolViolation("SP header with non-zero reserved bytes: \(hex(h))")
    }
    let id = UInt16(h[4]) << 8 | UInt16(h[5])
    guard id == peerProtocolID.rawValue else {
      let name = ProtocolID(rawValue: id).map { "\($0)".uppercased() } ?? "unknown"
      throw SocketError.protocolViolation(
        "incompatible SP peer: protocol 0x\(String(id, radix: 16)) (\(name)), \(protocolID) needs 0x\(String(peerProtocolID.rawValue, radix: 16)) (\("\(peerProtocolID)".uppercased()))"
      )
    }
  }

  open override func receivedEndOfStream() throws {
    if !buffer.isEmpty { throw SocketError.peerVanished }  // a frame was cut short
  }

  /// One SP message (including any protocol header such as a request id)
  /// arrived. The default delivers it as is.
  open func receivedMessage(_ message: [UInt8]) throws {
    try deliver(message)
  }

  /// Frames one SP message body (including its protocol header).
  public final func frame(_ body: [UInt8]) -> [UInt8] {
    let n = UInt64(body.count)
    var out = [UInt8]()
    out.reserveCapacity(8 + body.count)
    for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: n >> UInt64(shift))) }
    out += body
    return out
  }

  open override func encode(_ message: [UInt8]) throws -> [UInt8] { frame(message) }
}

func hex(_ bytes: [UInt8]) -> String {
  bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined(separator: " ")
}

extension SPSocket.ProtocolID: CustomStringConvertible {
  public var description: String {
    switch self {
    case .pair: "pair"
    case .pub: "pub"
    case .sub: "sub"
    case .req: "req"
    case .rep: "rep"
    }
  }
}
