import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// Bad peers for every SP pattern (issue 17), written by hand over raw
/// tcp:// and ipc:// connections to one of our sockets (listening): a wrong
/// protocol id, a header or frame cut short by the peer's close, a frame
/// longer than the socket's maximum message size, and per pattern a
/// request or survey id without the high bit, a backtrace over the TTL, a
/// PAIR v1 hop count over the TTL or malformed.
///
/// Each case checks that only that pipe suffers: the reason our socket
/// records for it (`SPPipes.recentFailures`), the socket's and the
/// handler's counters (exactly the expected ones move), the socket's fd
/// (no POLLERR, no POLLHUP, nothing queued), and a well-behaved peer on the
/// same socket exchanging a message after the bad one (its pipe the same,
/// not a new one). Where NNG keeps the pipe (a backtrace or a hop count
/// over the TTL) the message is dropped and counted and the pipe serves
/// the next message. docs/sp-interop.md says what NNG does in each case.
@Suite("SP bad peers, every pattern, over tcp:// and ipc://", .timeLimit(.minutes(2)), .testThreads)
struct SPBadPeerTests {
  @Test(
    "a bad header or frame fails that pipe only, saying why; a good peer keeps working",
    arguments: SPBadPeerPattern.allCases, SPBadFrame.allCases)
  func badFrame(pattern: SPBadPeerPattern, frame: SPBadFrame) async throws {
    try await withSPLoop { loop in
      for transport in SPBadPeerTransport.allCases {
        try await Self.runBadFrame(frame, SPBadPeerBench(pattern, transport, on: loop))
      }
    }
  }

  @Test(
    "a bad message for one pattern fails that pipe, or is dropped and counted; a good peer keeps working",
    arguments: SPBadMessage.allCases)
  func badMessage(message: SPBadMessage) async throws {
    try await withSPLoop { loop in
      for transport in SPBadPeerTransport.allCases {
        try await Self.runBadMessage(message, SPBadPeerBench(message.pattern, transport, on: loop))
      }
    }
  }

  /// The well-behaved peer connects and exchanges a message first (after
  /// the bad one for PAIR, which takes one peer at a time); then a bad
  /// peer reads our header, sends `frame`'s bytes, and must be dropped.
  static func runBadFrame(_ frame: SPBadFrame, _ bench: SPBadPeerBench) async throws {
    defer { bench.target.abort() }
    let pattern = bench.pattern
    let framing = bench.transport.framing
    let what = "\(pattern) over \(bench.transport), \(frame)"
    let first: RawSPPeer?
    if pattern.takesOnePeer { first = nil } else { first = try await bench.connectPeer(what) }
    if let first { try await bench.exchange(with: first, 1, what) }
    let before = try await bench.target.snapshot()

    let bad = try bench.connect()
    let header = await bad.read(8, within: .seconds(10))
    #expect(header.bytes == pattern.ours.header, "\(what): our header was \(header.bytes)")
    try bad.send(frame.bytes(pattern, framing, limit: SPBadPeerBench.maximumMessageSize))
    if frame.endsMidway { bad.shutdownWrite() }
    let end = await bad.waitForClose(within: .seconds(10))
    #expect(end.closure != nil, "\(what): our side kept the bad pipe")
    #expect(end.bytes.isEmpty, "\(what): after our header the bad peer got \(end.bytes)")

    let reason = frame.reason(pattern, framing, limit: SPBadPeerBench.maximumMessageSize)
    let after = try await bench.expectFailure(reason, since: before, sparing: first?.pipe, what)
    // PAIR pairs with a peer whose handshake completed, before its bad frame.
    let paired = pattern.takesOnePeer && frame.completesHandshake
    bench.expectMoves(
      from: before, to: after, added: 1, failed: 1, handler: paired ? ["peersPaired": 1] : [:], what)
    let goodOnly = first.map { [$0.pipe] } ?? []
    #expect(after.ready == goodOnly, "\(what): ready pipes \(after.ready)")
    try bench.expectHealthy(what)

    let good: RawSPPeer
    if let first { good = first } else { good = try await bench.connectPeer(what) }
    try await bench.exchange(with: good, 2, what)
    let last = try await bench.target.snapshot()
    #expect(last.ready == [good.pipe], "\(what): ready pipes \(last.ready)")
    #expect(last.socket.pipeFailures == 1 && last.failures.count == 1, "\(what): \(last.failures)")
    try bench.expectHealthy(what)
  }

  /// A peer of the right protocol completes its handshake (after the
  /// well-behaved one, except for PAIR), then sends `message`'s payloads.
  static func runBadMessage(_ message: SPBadMessage, _ bench: SPBadPeerBench) async throws {
    defer { bench.target.abort() }
    let pattern = bench.pattern
    let what = "\(message) over \(bench.transport)"
    let first: RawSPPeer?
    if pattern.takesOnePeer { first = nil } else { first = try await bench.connectPeer(what) }
    if let first { try await bench.exchange(with: first, 1, what) }
    let bad = try await bench.connectPeer(what)
    let before = try await bench.target.snapshot()
    try bad.client.send(message.payloads.flatMap { bad.framing.frame($0) })

    if let reason = message.reason {
      let end = await bad.client.waitForClose(within: .seconds(10))
      #expect(end.closure != nil, "\(what): our side kept the bad pipe")
      #expect(end.bytes.isEmpty, "\(what): the bad peer got \(end.bytes)")
      let after = try await bench.expectFailure(reason, since: before, sparing: first?.pipe, what)
      bench.expectMoves(from: before, to: after, added: 0, failed: 1, handler: message.deltas, what)
      let goodOnly = first.map { [$0.pipe] } ?? []
      #expect(after.ready == goodOnly, "\(what): ready pipes \(after.ready)")
    } else {
      // Dropped and counted, the pipe kept (as NNG does): nothing to wait
      // for but the counters.
      let counted = await waitUntilAsync(.seconds(10)) {
        guard let now = try? await bench.target.snapshot() else { return false }
        return message.deltas.allSatisfy { entry in
          now.counters[entry.key] == (before.counters[entry.key] ?? 0) + entry.value
        }
      }
      let after = try await bench.target.snapshot()
      #expect(counted, "\(what): \(message.deltas) never counted: \(after.counters)")
      bench.expectMoves(from: before, to: after, added: 0, failed: 0, handler: message.deltas, what)
      #expect(after.failures == before.failures, "\(what): \(after.failures)")
      #expect(after.ready == before.ready, "\(what): ready pipes \(before.ready) -> \(after.ready)")
      // The same pipe serves a message at the limit, then an ordinary one.
      try await Self.atTheLimit(message, bad, bench, what)
      try await bench.exchange(with: bad, 3, what)
    }
    try bench.expectHealthy(what)

    let good: RawSPPeer
    if let first {
      good = first
    } else if message.reason == nil {
      good = bad  // PAIR v1 kept its one peer
    } else {
      good = try await bench.connectPeer(what)  // the place is free again
    }
    try await bench.exchange(with: good, 2, what)
    let last = try await bench.target.snapshot()
    let failures = message.reason == nil ? 0 : 1
    #expect(last.socket.pipeFailures == failures && last.failures.count == failures, "\(what): \(last.failures)")
    if message.reason == nil {
      #expect(Set(last.ready) == Set([good.pipe, bad.pipe]), "\(what): ready pipes \(last.ready)")
    } else {
      #expect(last.ready == [good.pipe], "\(what): ready pipes \(last.ready)")
    }
    try bench.expectHealthy(what)
  }

  /// After the over-TTL messages were dropped: one exactly at the TTL
  /// (7 hops and the id; hop count 8) is delivered on the same pipe, and a
  /// REP or RESPONDENT answers it with its whole backtrace.
  static func atTheLimit(_ message: SPBadMessage, _ peer: RawSPPeer, _ bench: SPBadPeerBench, _ what: String)
    async throws
  {
    let body = utf8("at the limit")
    switch message.pattern {
    case .rep0, .respondent0:
      let backtrace = (1...7).flatMap { spWord(UInt32($0)) } + spWord(0x8000_0008)
      try peer.send(backtrace + body)
      let got = try await bench.target.next()
      #expect(got == body, "\(what): our \(message.pattern) received \(String(describing: got))")
      let sent = try bench.target.trySend(utf8("answered"))
      #expect(sent, "\(what): our send was refused")
      let reply = await peer.receive()
      #expect(reply == backtrace + utf8("answered"), "\(what): the peer got \(String(describing: reply))")
    case .pair1:
      try peer.send(spWord(8) + body)
      let got = try await bench.target.next()
      #expect(got == body, "\(what): our PAIR v1 received \(String(describing: got))")
    default:
      Issue.record("\(what): no message at the limit for \(message.pattern)")
    }
  }
}

/// Bad bytes any SP peer can send, whatever the pattern.
enum SPBadFrame: String, CaseIterable, Sendable, CustomStringConvertible {
  /// A well-formed header with a protocol id our socket does not pair with.
  case wrongProtocol
  /// 3 of the 8 header bytes, then the peer closes.
  case headerCutShort
  /// The header, 3 bytes of a frame's prefix, then the peer closes.
  case prefixCutShort
  /// The header, a frame of 100 bytes of which 10 come, then the peer closes.
  case bodyCutShort
  /// The header and a frame prefix one byte over the socket's maximum
  /// message size (the body never comes: it is refused on the prefix).
  case oversize
  /// The header and a frame prefix of 2^64 - 1 bytes (no trap converting it).
  case oversizeMaximal

  var description: String { rawValue }

  /// Whether the peer's header is right (its pipe completes its handshake).
  var completesHandshake: Bool { self != .wrongProtocol && self != .headerCutShort }
  /// Whether the peer closes its side after its bytes (the pipe ends mid-header or mid-frame).
  var endsMidway: Bool { self == .headerCutShort || self == .prefixCutShort || self == .bodyCutShort }

  /// What the bad peer of a `pattern` socket sends, in `framing`.
  func bytes(_ pattern: SPBadPeerPattern, _ framing: SPFraming, limit: Int) -> [UInt8] {
    let header = pattern.peer.header
    switch self {
    case .wrongProtocol: return pattern.wrongPeer.id.header
    case .headerCutShort: return Array(header.prefix(3))
    case .prefixCutShort: return header + Array(spFramePrefix(framing, 100).prefix(3))
    case .bodyCutShort: return header + spFramePrefix(framing, 100) + [UInt8](repeating: 0x42, count: 10)
    case .oversize: return header + spFramePrefix(framing, UInt64(limit) + 1)
    case .oversizeMaximal: return header + spFramePrefix(framing, .max)
    }
  }

  /// The reason our socket records for the pipe.
  func reason(_ pattern: SPBadPeerPattern, _ framing: SPFraming, limit: Int) -> String {
    let prefix = framing.prefixLength
    switch self {
    case .wrongProtocol: return pattern.wrongPeer.reason
    case .headerCutShort: return "protocol violation: the peer closed after 3 of the 8 SP header bytes"
    case .prefixCutShort:
      return "protocol violation: the peer closed mid-frame after 3 of the \(prefix) frame prefix bytes"
    case .bodyCutShort:
      return "protocol violation: the peer closed mid-frame after \(prefix + 10) of \(prefix + 100) bytes"
    case .oversize: return "message of \(limit + 1) bytes exceeds the limit of \(limit) bytes"
    case .oversizeMaximal: return "message of \(Int.max) bytes exceeds the limit of \(limit) bytes"
    }
  }
}

/// Bad messages that only some patterns can receive, each from a peer whose
/// handshake completed.
enum SPBadMessage: String, CaseIterable, Sendable, CustomStringConvertible {
  /// REQ: a reply whose request id lacks the high bit (NNG drops it and
  /// keeps the pipe; ours fails the pipe).
  case replyIDWithoutHighBit
  /// REQ: a reply of 3 bytes (NNG closes the pipe too).
  case replyShorterThanID
  /// SURVEYOR: an answer whose survey id lacks the high bit (NNG drops it).
  case answerIDWithoutHighBit
  /// SURVEYOR: an answer of 3 bytes (NNG closes the pipe too).
  case answerShorterThanID
  /// REP: backtraces over the TTL of 8, dropped and counted, the pipe kept (as NNG).
  case requestOverTTL
  /// REP: a request whose backtrace ends before any word has the high bit (NNG closes the pipe too).
  case requestWithoutID
  /// RESPONDENT: as `requestOverTTL`.
  case surveyOverTTL
  /// RESPONDENT: as `requestWithoutID`.
  case surveyWithoutID
  /// PAIR v1: hop counts 9 and 0xff, over the TTL of 8: dropped and counted, the pipe kept (as NNG).
  case hopCountOverTTL
  /// PAIR v1: hop count 0x100, malformed: counted, the pipe fails (as NNG).
  case hopCountMalformed

  var description: String { rawValue }

  var pattern: SPBadPeerPattern {
    switch self {
    case .replyIDWithoutHighBit, .replyShorterThanID: .req0
    case .answerIDWithoutHighBit, .answerShorterThanID: .surveyor0
    case .requestOverTTL, .requestWithoutID: .rep0
    case .surveyOverTTL, .surveyWithoutID: .respondent0
    case .hopCountOverTTL, .hopCountMalformed: .pair1
    }
  }

  /// The messages (unframed), sent in one write.
  var payloads: [[UInt8]] {
    switch self {
    case .replyIDWithoutHighBit, .answerIDWithoutHighBit:
      return [spWord(0x1234_5678) + utf8("no high bit")]
    case .replyShorterThanID, .answerShorterThanID:
      return [[0x80, 0x00, 0x01]]
    case .requestOverTTL, .surveyOverTTL:
      // Eight hops and the id (nine words, one over the TTL), and nine
      // words with no id among them.
      let eightHops = (1...8).flatMap { spWord(UInt32($0)) } + spWord(0x8000_0009) + utf8("nine words")
      let noID = (1...9).flatMap { spWord(UInt32($0)) } + utf8("no id in reach")
      return [eightHops, noID]
    case .requestWithoutID, .surveyWithoutID:
      return [spWord(1) + spWord(2)]
    case .hopCountOverTTL:
      return [spWord(9) + utf8("nine"), spWord(0xff) + utf8("ff")]
    case .hopCountMalformed:
      return [spWord(0x100) + utf8("256")]
    }
  }

  /// The reason the pipe fails with; nil when the pipe stays.
  var reason: String? {
    switch self {
    case .replyIDWithoutHighBit: "protocol violation: an SP reply whose request id 0x12345678 lacks the high bit"
    case .replyShorterThanID: "protocol violation: an SP reply of 3 bytes, shorter than its 4-byte request id"
    case .answerIDWithoutHighBit: "protocol violation: an SP answer whose survey id 0x12345678 lacks the high bit"
    case .answerShorterThanID: "protocol violation: an SP answer of 3 bytes, shorter than its 4-byte survey id"
    case .requestWithoutID:
      "protocol violation: an SP request of 8 bytes whose backtrace has no request id (no word with the high bit)"
    case .surveyWithoutID:
      "protocol violation: an SP survey of 8 bytes whose backtrace has no survey id (no word with the high bit)"
    case .hopCountMalformed: "protocol violation: a PAIR v1 hop count of 0x100, above 0xff (a high byte is set)"
    case .requestOverTTL, .surveyOverTTL, .hopCountOverTTL: nil
    }
  }

  /// The handler counters the messages move (by `Statistics` field name).
  var deltas: [String: Int] {
    switch self {
    case .requestOverTTL: ["requestsOverTTL": 2]
    case .surveyOverTTL: ["surveysOverTTL": 2]
    case .hopCountOverTTL: ["messagesOverTTL": 2]
    case .hopCountMalformed: ["malformedMessages": 1]
    default: [:]
    }
  }
}
