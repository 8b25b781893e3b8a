public import UserProto

/// The scalability protocols' ids, as SP peers send them in their 8-byte
/// header (protocol number × 16 + role; the names are NNG's).
public enum SPProtocolID: UInt16, Sendable, CaseIterable, CustomStringConvertible {
  /// PAIR version 0: one peer, messages both ways.
  case pair0 = 0x10
  /// PAIR version 1 (NNG's): one peer, messages both ways, each behind a hop count.
  case pair1 = 0x11
  /// PUB: publishes to every subscriber.
  case pub0 = 0x20
  /// SUB: receives what publishers send, filtered by prefix.
  case sub0 = 0x21
  /// REQ: sends requests, receives their replies.
  case req0 = 0x30
  /// REP: receives requests, sends each reply back to its requester.
  case rep0 = 0x31
  /// PUSH: sends each message to one puller.
  case push0 = 0x50
  /// PULL: receives what pushers send.
  case pull0 = 0x51
  /// SURVEYOR: asks every respondent, collects their answers.
  case surveyor0 = 0x62
  /// RESPONDENT: answers a surveyor's questions.
  case respondent0 = 0x63
  /// BUS: every message to every connected peer.
  case bus0 = 0x70

  /// The role's name without its version (`PUB`, `REQ`...), as in errors.
  public var name: String {
    switch self {
    case .pair0, .pair1: "PAIR"
    case .pub0: "PUB"
    case .sub0: "SUB"
    case .req0: "REQ"
    case .rep0: "REP"
    case .push0: "PUSH"
    case .pull0: "PULL"
    case .surveyor0: "SURVEYOR"
    case .respondent0: "RESPONDENT"
    case .bus0: "BUS"
    }
  }

  /// The name in lower case: `pub`, `req`...
  public var description: String { name.lowercased() }

  /// The protocol a peer of this one speaks: REQ's is REP and REP's is
  /// REQ, and so on; PAIR and BUS are their own peers.
  public var peer: SPProtocolID {
    switch self {
    case .pair0: .pair0
    case .pair1: .pair1
    case .pub0: .sub0
    case .sub0: .pub0
    case .req0: .rep0
    case .rep0: .req0
    case .push0: .pull0
    case .pull0: .push0
    case .surveyor0: .respondent0
    case .respondent0: .surveyor0
    case .bus0: .bus0
    }
  }

  /// The 8 header bytes a socket of this protocol sends first on each pipe:
  /// `00 'S' 'P' 00`, the id (16-bit big-endian), two zero bytes.
  public var header: [UInt8] {
    [0x00, 0x53, 0x50, 0x00, UInt8(rawValue >> 8), UInt8(rawValue & 0xff), 0x00, 0x00]
  }
}

/// How SP messages are delimited on a stream pipe.
public enum SPFraming: Sendable, Hashable {
  /// SP/TCP (and our `inproc://`): a 64-bit big-endian length, then the message.
  case tcp
  /// SP/IPC (`ipc://`, NNG and nanomsg): a message type byte (1), then
  /// the 64-bit big-endian length, then the message.
  case ipc

  /// The framing SP peers use on `url`: IPC on `ipc://`, TCP otherwise.
  public init(for url: TransportURL) {
    if case .ipc = url { self = .ipc } else { self = .tcp }
  }

  /// Bytes before each message's body.
  public var prefixLength: Int { self == .ipc ? 9 : 8 }

  /// One message framed for the wire: the prefix, then `body` (one copy).
  public func frame(_ body: [UInt8]) -> [UInt8] { frame(header: [], body) }

  /// One message framed for the wire whose SP header (a PAIR v1 hop count,
  /// say) is kept apart from its body: the prefix, counting both, then
  /// `header`, then `body` (one copy, no concatenation first).
  public func frame(header: [UInt8], _ body: [UInt8]) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(prefixLength + header.count + body.count)
    if self == .ipc { out.append(0x01) }
    let n = UInt64(header.count + body.count)
    for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: n >> UInt64(shift))) }
    out += header
    out += body
    return out
  }
}

/// The SP pipe layer every SP handler shares: per pipe, the header
/// exchange, the header timeout, the stream framing, and the maximum
/// message size. Loop-confined, like the handler that owns it.
///
/// On ``added(_:context:)`` it writes this side's header and starts the
/// header timer. ``received(_:from:context:handshake:message:)`` checks
/// the peer's header (magic, version, reserved bytes, and that its protocol
/// id is the one expected), then cuts the stream into messages in place,
/// each handed to the handler's closure positioned at the message's first
/// byte; nothing reaches the handler before the handshake. Every fault
/// (bad header, no header in time, an oversize or malformed frame, a frame
/// cut short by the end of the stream) fails that pipe only, with a
/// `SocketError.protocolViolation(_:)` or
/// `SocketError.messageTooLarge(size:limit:)` saying what happened.
public final class SPPipes {
  /// This side's protocol, sent in its header.
  public let protocolID: SPProtocolID
  /// The only protocol accepted from the peer.
  public let peerProtocolID: SPProtocolID
  /// How long a peer has to send its header once its pipe is up (NNG
  /// waits 10 s); a duration too long for the loop's clock never fires.
  public var headerTimeout: Duration

  private struct Entry {
    let pipe: SocketPipe
    let framing: SPFraming
    var ready = false
    var headerTimer: HandlerTimer?
  }
  private var entries: [UInt64: Entry] = [:]
  /// Pipes whose handshake completed, in that order.
  public private(set) var ready: [SocketPipe] = []
  /// The most recent reasons pipes failed (the last 32), oldest first.
  public private(set) var recentFailures: [String] = []

  /// The default header timeout (NNG's).
  public static let defaultHeaderTimeout: Duration = .seconds(10)

  /// The pipe layer of a `protocolID` socket that accepts only `peer` peers; a pipe whose
  /// header has not arrived within `headerTimeout` fails.
  public init(_ protocolID: SPProtocolID, peer: SPProtocolID, headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    self.protocolID = protocolID
    self.peerProtocolID = peer
    self.headerTimeout = headerTimeout
  }

  /// True once `pipe`'s handshake completed (and until it goes).
  public func isReady(_ pipe: SocketPipe) -> Bool { entries[pipe.id]?.ready ?? false }

  /// The ready pipe with this id.
  public func readyPipe(id: UInt64) -> SocketPipe? {
    guard let entry = entries[id], entry.ready else { return nil }
    return entry.pipe
  }

  /// The framing of `pipe` (TCP's for a pipe it does not know).
  public func framing(of pipe: SocketPipe) -> SPFraming { entries[pipe.id]?.framing ?? SPFraming(for: pipe.url) }

  /// A pipe came up: sends this side's header and starts the header timer.
  /// A datagram pipe (`udp://`) is closed: SP has no datagram mapping.
  public func added(_ pipe: SocketPipe, context: SocketContext) {
    if pipe.isDatagram {
      pipe.close(error: .notSupported("SP runs over stream transports (tcp://, ipc://, inproc://), not \(pipe.url)"))
      return
    }
    var entry = Entry(pipe: pipe, framing: SPFraming(for: pipe.url))
    do throws(SocketError) {
      try pipe.write(protocolID.header)
      entry.headerTimer = try context.startTimer(after: headerTimeout)
    } catch {
      pipe.close(error: error)
      return
    }
    entries[pipe.id] = entry
  }

  /// A pipe went: forgets it (and its timer); records why it failed.
  /// Returns how many of the handler's messages went with it unsent: the
  /// writes its output still held (`SocketPipe.queuedOutputMessages`),
  /// this side's SP header excepted. A protocol counts them as lost; what
  /// the kernel had taken but the peer never read is not known (SP has no
  /// acknowledgements).
  @discardableResult
  public func removed(_ pipe: SocketPipe, error: SocketError?) -> Int {
    var unsent = 0
    if let entry = entries.removeValue(forKey: pipe.id) {
      entry.headerTimer?.cancel()
      if entry.ready { ready.removeAll { $0 === pipe } }
      // The header is the pipe's first write: it is among the queued ones
      // while nothing at all was handed on.
      let handedOn = pipe.writtenMessages - pipe.queuedOutputMessages
      unsent = max(0, pipe.queuedOutputMessages - (handedOn == 0 ? 1 : 0))
    }
    if let error {
      recentFailures.append("\(pipe): \(error)")
      if recentFailures.count > 32 { recentFailures.removeFirst(recentFailures.count - 32) }
    }
    return unsent
  }

  /// Handles a timer if it is one of this layer's (a header timeout: the
  /// pipe fails); returns false for the handler's own timers.
  public func timerFired(_ timer: HandlerTimer) -> Bool {
    guard let entry = entries.values.first(where: { $0.headerTimer === timer }) else { return false }
    entries[entry.pipe.id]?.headerTimer = nil
    if !entry.ready {
      entry.pipe.close(error: .protocolViolation("no SP header from the peer within \(headerTimeout)"))
    }
    return true
  }

  /// Parses what `pipe` received, in place: the peer's header first
  /// (`handshake` is called once it is accepted), then each complete
  /// message: `message` is called with the input positioned at the
  /// message's first byte and the message's length; it consumes what it
  /// wants of it (reading or skipping), and the rest is skipped after it.
  /// Incomplete data stays in `input` for the next call.
  /// - Throws: what fails the pipe: a bad header, a bad frame, an oversize
  ///   frame, or what `message` throws.
  public func received(
    _ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext,
    handshake: (SocketPipe) -> Void = { _ in },
    message: (inout InboundBuffer, Int, SocketPipe) throws(SocketError) -> Void
  ) throws(SocketError) {
    guard var entry = entries[pipe.id] else {
      input.moveReaderIndex(forwardBy: input.readableBytes)  // not ours (or failing): ignore
      return
    }
    if !entry.ready {
      guard input.readableBytes >= 8 else { return }
      try checkHeader(input)
      input.moveReaderIndex(forwardBy: 8)
      entry.ready = true
      entry.headerTimer?.cancel()
      entry.headerTimer = nil
      entries[pipe.id] = entry
      ready.append(pipe)
      handshake(pipe)
    }
    let framing = entry.framing
    let prefix = framing.prefixLength
    let limit = context.options.maximumMessageSize
    while input.readableBytes >= prefix, pipe.isOpen {
      if framing == .ipc, input[0] != 0x01 {
        throw .protocolViolation("SP/IPC message type \(input[0]), expected 1")
      }
      let length = input.peekBigEndian(UInt64.self, at: prefix - 8) ?? 0
      if length > UInt64(limit) {
        throw .messageTooLarge(size: length > UInt64(Int.max) ? Int.max : Int(length), limit: limit)
      }
      let count = Int(length)
      // Subtracted, not added: with no size limit (Int.max) a length near
      // Int.max would overflow `prefix + count`.
      guard input.readableBytes - prefix >= count else { return }
      input.moveReaderIndex(forwardBy: prefix)
      let before = input.readableBytes
      try message(&input, count, pipe)
      let used = before - input.readableBytes
      precondition(used >= 0 && used <= count, "an SP message handler consumed \(used) of \(count) bytes")
      if used < count { input.moveReaderIndex(forwardBy: count - used) }
    }
  }

  /// The peer finished sending: what was left unparsed is an error (a
  /// header or a frame cut short); otherwise the pipe just closes (SP has
  /// no half-close).
  public func reachedEnd(_ pipe: SocketPipe, input: InboundBuffer) throws(SocketError) {
    if !input.isEmpty {
      let have = input.readableBytes
      guard isReady(pipe) else { throw .protocolViolation("the peer closed after \(have) of the 8 SP header bytes") }
      let prefix = framing(of: pipe).prefixLength
      guard have >= prefix else {
        throw .protocolViolation("the peer closed mid-frame after \(have) of the \(prefix) frame prefix bytes")
      }
      let length = input.peekBigEndian(UInt64.self, at: prefix - 8) ?? 0
      throw .protocolViolation("the peer closed mid-frame after \(have) of \(UInt64(prefix) &+ length) bytes")
    }
    pipe.close()
  }

  private func checkHeader(_ input: InboundBuffer) throws(SocketError) {
    let bytes = (0..<8).map { input[$0] }
    let text = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
    guard bytes[0] == 0x00, bytes[1] == 0x53, bytes[2] == 0x50 else {
      throw .protocolViolation("not an SP peer: header \(text)")
    }
    guard bytes[3] == 0x00 else { throw .protocolViolation("SP header version \(bytes[3]), expected 0: \(text)") }
    guard bytes[6] == 0, bytes[7] == 0 else {
      throw .protocolViolation("SP header with non-zero reserved bytes: \(text)")
    }
    let id = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
    guard id == peerProtocolID.rawValue else {
      let name = SPProtocolID(rawValue: id)?.name ?? "unknown"
      throw .protocolViolation(
        "incompatible SP peer: protocol 0x\(String(id, radix: 16)) (\(name)), \(protocolID.name.lowercased()) needs "
          + "0x\(String(peerProtocolID.rawValue, radix: 16)) (\(peerProtocolID.name))")
    }
  }
}
