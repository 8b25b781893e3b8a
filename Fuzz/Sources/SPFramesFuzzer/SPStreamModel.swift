import FuzzSupport

/// The SP patterns this target drives, each with what its socket must do
/// with a stream from its peer: the `Socket<Handler>` handlers
/// (Sources/Examples/Protocols/SP).
enum Pattern: CaseIterable {
  case pull, bus, pair, sub, push, pub, rep, respondent, req, surveyor, pair1

  /// The protocol id the socket sends, and the only one it accepts.
  var ids: (own: UInt16, peer: UInt16) {
    switch self {
    case .pull: (0x51, 0x50)
    case .bus: (0x70, 0x70)
    case .pair: (0x10, 0x10)
    case .sub: (0x21, 0x20)
    case .push: (0x50, 0x51)
    case .pub: (0x20, 0x21)
    case .rep: (0x31, 0x30)
    case .respondent: (0x63, 0x62)
    case .req: (0x30, 0x31)
    case .surveyor: (0x62, 0x63)
    case .pair1: (0x11, 0x11)
    }
  }

  /// The word the socket's requests or surveys start with (REQ, SURVEYOR).
  var sendsIDs: Bool { self == .req || self == .surveyor }
}

/// The settings a stream is read with.
struct StreamConfig {
  var pattern: Pattern
  var ipc: Bool
  /// The socket's maximum message size.
  var limit: Int
  /// REP and RESPONDENT: the TTL (hops) and how many may wait unanswered;
  /// PAIR v1: the TTL (the largest hop count accepted).
  var ttl: Int
  var unansweredLimit: Int
  /// SUB: the subscribed prefixes.
  var subscriptions: [[UInt8]]
  /// The peer ends the stream (half-close) after its last token.
  var ends: Bool
}

/// Why the pipe must fail, as the text of its error says it.
enum Failure: Equatable {
  case notSP, version, reserved, incompatible, headerCut
  case ipcType, tooLarge, frameCut
  /// REP, RESPONDENT: a backtrace without a word with the high bit.
  case noID
  /// REQ, SURVEYOR: a reply shorter than its id, or an id without the high bit.
  case shortID, noHighBit
  /// PAIR v1: a message shorter than its hop count, or a count above 0xFF.
  case shortHops, highHops

  /// A piece of the error's text that names this reason.
  var text: String {
    switch self {
    case .notSP: "not an SP peer"
    case .version: "SP header version"
    case .reserved: "non-zero reserved bytes"
    case .incompatible: "incompatible SP peer"
    case .headerCut: "of the 8 SP header bytes"
    case .ipcType: "SP/IPC message type"
    case .tooLarge: "exceeds the limit"
    case .frameCut: "closed mid-frame"
    case .noID: "backtrace has no"
    case .shortID: "shorter than its 4-byte"
    case .noHighBit: "lacks the high bit"
    case .shortHops: "shorter than its 4-byte hop count"
    case .highHops: "above 0xff"
    }
  }
}

/// What the socket must have done with the stream its peer wrote.
struct Expectation {
  /// The pipe fails with this reason; nil: it does not.
  var failure: Failure?
  /// The stream ended cleanly: the pipe closed without an error.
  var closedCleanly = false
  /// The messages the application receives, in order (patterns whose
  /// deliveries do not depend on timing).
  var delivered: [[UInt8]] = []
  /// REQ and SURVEYOR: the well-formed replies or answers parsed (id, body),
  /// in order; which are delivered depends on the id awaited at the time.
  var replies: [(id: UInt32, body: [UInt8])] = []
  /// Messages dropped by the pattern's rules: SUB's filtered, PUB's and
  /// PUSH's ignored, REP's, RESPONDENT's and PAIR v1's over the TTL, and over the
  /// unanswered limit (`overLimit`).
  var dropped = 0
  var overLimit = 0
  /// The header was accepted.
  var handshake = false
}

/// What a backtrace at the front of `message` is, per sp-request-reply-01:
/// words up to the first with its high bit, at most `ttl` of them.
enum Backtrace: Equatable {
  case length(Int)
  case overTTL
  case noID

  init(_ message: ArraySlice<UInt8>, ttl: Int) {
    let words = Array(message)
    let limit = max(ttl, 1)
    var count = 0
    while true {
      guard let word = SPWire.word(in: words, at: count * 4) else {
        self = .noID
        return
      }
      count += 1
      if word & 0x8000_0000 != 0 {
        self = .length(count * 4)
        return
      }
      if count >= limit {
        self = .overTTL
        return
      }
    }
  }
}

/// The stream model: what `config.pattern` must make of `stream`, read
/// from scratch, in one piece (the socket reads it in whatever chunks
/// arrived, which must not matter).
func expectation(of stream: [UInt8], _ config: StreamConfig) -> Expectation {
  var result = Expectation()
  guard stream.count >= 8 else {
    if config.ends { if stream.isEmpty { result.closedCleanly = true } else { result.failure = .headerCut } }
    return result
  }
  if let failure = headerFailure(
    Array(stream[0..<8]), expected: config.pattern.ids.peer)
  {
    result.failure = failure
    return result
  }
  result.handshake = true
  let prefix = config.ipc ? 9 : 8
  var offset = 8
  while stream.count - offset >= prefix {
    if config.ipc && stream[offset] != 0x01 {
      result.failure = .ipcType
      return result
    }
    let length = SPWire.length(in: stream, at: offset + prefix - 8) ?? 0
    if length > UInt64(config.limit) {
      result.failure = .tooLarge
      return result
    }
    guard UInt64(stream.count - offset - prefix) >= length else { break }
    let start = offset + prefix
    let message = stream[start..<(start + Int(length))]
    offset = start + Int(length)
    if let failure = take(message, config, &result) {
      result.failure = failure
      return result
    }
  }
  if config.ends {
    if offset < stream.count { result.failure = .frameCut } else { result.closedCleanly = true }
  }
  return result
}

/// The header check, in the order the sockets make it.
private func headerFailure(_ header: [UInt8], expected: UInt16) -> Failure? {
  guard header[0] == 0x00, header[1] == 0x53, header[2] == 0x50 else { return .notSP }
  guard header[3] == 0x00 else { return .version }
  guard header[6] == 0, header[7] == 0 else { return .reserved }
  guard UInt16(header[4]) << 8 | UInt16(header[5]) == expected else { return .incompatible }
  return nil
}

/// One message, by the pattern's rules; returns a failure of the pipe.
private func take(_ message: ArraySlice<UInt8>, _ config: StreamConfig, _ result: inout Expectation) -> Failure? {
  switch config.pattern {
  case .pull, .bus, .pair:
    result.delivered.append(Array(message))
  case .sub:
    if config.subscriptions.contains(where: { message.starts(with: $0) }) {
      result.delivered.append(Array(message))
    } else {
      result.dropped += 1
    }
  case .push, .pub:
    result.dropped += 1
  case .rep, .respondent:
    switch Backtrace(message, ttl: config.ttl) {
    case .noID: return .noID
    case .overTTL: result.dropped += 1
    case .length(let length):
      if result.delivered.count < config.unansweredLimit {
        result.delivered.append(Array(message.dropFirst(length)))
      } else {
        result.overLimit += 1
      }
    }
  case .req, .surveyor:
    let bytes = Array(message)
    guard let id = SPWire.word(in: bytes, at: 0) else { return .shortID }
    guard id & 0x8000_0000 != 0 else { return .noHighBit }
    result.replies.append((id, Array(bytes.dropFirst(4))))
  case .pair1:
    // NNG's pair1_pipe_recv_cb: malformed fails the pipe, over the TTL is dropped.
    let bytes = Array(message)
    guard let hops = SPWire.word(in: bytes, at: 0) else { return .shortHops }
    guard hops <= 0xFF else { return .highHops }
    if hops > UInt32(max(config.ttl, 1)) {
      result.dropped += 1
    } else {
      result.delivered.append(Array(bytes.dropFirst(4)))
    }
  }
  return nil
}
