import ExampleProtocols
import Glibc
import Testing
import UserProto

// The pieces of the bad-peer suite (SPBadPeerTests.swift): every SP pattern
// as a value, one of our sockets of that pattern listening on tcp:// or
// ipc:// behind closures that do not depend on the handler's type, and the
// raw peers that talk to it byte by byte.

/// What the bad-peer checks need of an SP handler: its pipe layer and its
/// counters (every handler's `Statistics`, all `Int` fields).
protocol SPBadPeerHandler: SocketHandler {
  associatedtype Statistics
  var pipes: SPPipes { get }
  var statistics: Statistics { get }
}

extension Req0Handler: SPBadPeerHandler {}
extension Rep0Handler: SPBadPeerHandler {}
extension Pub0Handler: SPBadPeerHandler {}
extension Sub0Handler: SPBadPeerHandler {}
extension Push0Handler: SPBadPeerHandler {}
extension Pull0Handler: SPBadPeerHandler {}
extension Pair0Handler: SPBadPeerHandler {}
extension Pair1Handler: SPBadPeerHandler {}
extension Surveyor0Handler: SPBadPeerHandler {}
extension Respondent0Handler: SPBadPeerHandler {}
extension Bus0Handler: SPBadPeerHandler {}

/// A handler's counters by field name, so a check can say that exactly the
/// expected ones moved.
func badPeerCounters<S>(_ statistics: S) -> [String: Int] {
  var counters: [String: Int] = [:]
  for child in Mirror(reflecting: statistics).children {
    if let name = child.label, let value = child.value as? Int { counters[name] = value }
  }
  return counters
}

/// Every SP pattern this package implements, by our socket's role.
enum SPBadPeerPattern: String, CaseIterable, Sendable, CustomStringConvertible {
  case req0, rep0, pub0, sub0, push0, pull0, pair0, pair1, surveyor0, respondent0, bus0

  var description: String { rawValue }

  /// Our socket's protocol.
  var ours: SPProtocolID {
    switch self {
    case .req0: .req0
    case .rep0: .rep0
    case .pub0: .pub0
    case .sub0: .sub0
    case .push0: .push0
    case .pull0: .pull0
    case .pair0: .pair0
    case .pair1: .pair1
    case .surveyor0: .surveyor0
    case .respondent0: .respondent0
    case .bus0: .bus0
    }
  }

  /// The only protocol our socket accepts from a peer.
  var peer: SPProtocolID {
    switch self {
    case .req0: .rep0
    case .rep0: .req0
    case .pub0: .sub0
    case .sub0: .pub0
    case .push0: .pull0
    case .pull0: .push0
    case .pair0: .pair0
    case .pair1: .pair1
    case .surveyor0: .respondent0
    case .respondent0: .surveyor0
    case .bus0: .bus0
    }
  }

  /// A peer of a wrong protocol (a socket of our own kind where that is
  /// not our peer: REQ dialing REQ, the usual mistake; PAIR v1 for PAIR v0
  /// and back; PUB for BUS) and the reason our socket records for it.
  var wrongPeer: (id: SPProtocolID, reason: String) {
    switch self {
    case .req0: (.req0, "incompatible SP peer: protocol 0x30 (REQ), req needs 0x31 (REP)")
    case .rep0: (.rep0, "incompatible SP peer: protocol 0x31 (REP), rep needs 0x30 (REQ)")
    case .pub0: (.pub0, "incompatible SP peer: protocol 0x20 (PUB), pub needs 0x21 (SUB)")
    case .sub0: (.sub0, "incompatible SP peer: protocol 0x21 (SUB), sub needs 0x20 (PUB)")
    case .push0: (.push0, "incompatible SP peer: protocol 0x50 (PUSH), push needs 0x51 (PULL)")
    case .pull0: (.pull0, "incompatible SP peer: protocol 0x51 (PULL), pull needs 0x50 (PUSH)")
    case .pair0: (.pair1, "incompatible SP peer: protocol 0x11 (PAIR), pair needs 0x10 (PAIR)")
    case .pair1: (.pair0, "incompatible SP peer: protocol 0x10 (PAIR), pair needs 0x11 (PAIR)")
    case .surveyor0:
      (.surveyor0, "incompatible SP peer: protocol 0x62 (SURVEYOR), surveyor needs 0x63 (RESPONDENT)")
    case .respondent0:
      (.respondent0, "incompatible SP peer: protocol 0x63 (RESPONDENT), respondent needs 0x62 (SURVEYOR)")
    case .bus0: (.pub0, "incompatible SP peer: protocol 0x20 (PUB), bus needs 0x70 (BUS)")
    }
  }

  /// PAIR takes one peer at a time: a second pipe that completes its
  /// handshake is refused, so the well-behaved peer comes after the bad one.
  var takesOnePeer: Bool { self == .pair0 || self == .pair1 }

  /// Our socket of this pattern: no timer of its own that could act during
  /// a test (REQ never resends, a survey never ends by time), a header
  /// timeout no loaded machine reaches, everything it receives subscribed.
  func makeSocket(on loop: EventLoop, options: SocketOptions, headerTimeout: Duration) throws -> SPBadPeerTarget {
    switch self {
    case .req0:
      return SPBadPeerTarget(
        try Socket(Req0Handler(resendInterval: .zero, headerTimeout: headerTimeout), loop: loop, options: options))
    case .rep0:
      return SPBadPeerTarget(try Socket(Rep0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .pub0:
      return SPBadPeerTarget(try Socket(Pub0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .sub0:
      return SPBadPeerTarget(
        try Socket(Sub0Handler(subscriptions: [[]], headerTimeout: headerTimeout), loop: loop, options: options))
    case .push0:
      return SPBadPeerTarget(try Socket(Push0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .pull0:
      return SPBadPeerTarget(try Socket(Pull0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .pair0:
      return SPBadPeerTarget(try Socket(Pair0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .pair1:
      return SPBadPeerTarget(try Socket(Pair1Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .surveyor0:
      return SPBadPeerTarget(
        try Socket(Surveyor0Handler(surveyTime: .zero, headerTimeout: headerTimeout), loop: loop, options: options))
    case .respondent0:
      return SPBadPeerTarget(
        try Socket(Respondent0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    case .bus0:
      return SPBadPeerTarget(try Socket(Bus0Handler(headerTimeout: headerTimeout), loop: loop, options: options))
    }
  }
}

/// The stream transports a raw peer can reach (inproc:// has no bytes to forge).
enum SPBadPeerTransport: String, CaseIterable, Sendable, CustomStringConvertible {
  case tcp, ipc

  var description: String { rawValue }
  var framing: SPFraming { self == .ipc ? .ipc : .tcp }
}

/// What a socket and its handler show at one moment, read on the loop in
/// one go (so the pieces agree with each other).
struct SPBadPeerSnapshot: Sendable {
  /// `SPPipes.recentFailures`: "pipe ID (URL...): reason", oldest first.
  var failures: [String]
  /// The ids of the pipes whose handshake completed, in that order.
  var ready: [UInt64]
  /// The handler's `Statistics`, by field name.
  var counters: [String: Int]
  /// The socket's counters.
  var socket: SocketStatistics
}

/// One of our SP sockets, whatever its handler, behind closures.
struct SPBadPeerTarget: Sendable {
  /// The pollable fd (handed out at once, so the mask fd is kept up to date from the start).
  let fileDescriptor: Int32
  let snapshot: @Sendable () async throws -> SPBadPeerSnapshot
  let trySend: @Sendable ([UInt8]) throws -> Bool
  /// The next message received within 10 s, or nil.
  let next: @Sendable () async throws -> [UInt8]?
  /// True when nothing waits for the application (throws the socket's pending error, if any).
  let receivesNothing: @Sendable () throws -> Bool
  /// True when the socket's readiness shows neither error nor hang-up.
  let showsNoError: @Sendable () -> Bool
  let listen: @Sendable (String) throws -> TransportURL
  let abort: @Sendable () -> Void

  init<H: SPBadPeerHandler>(_ socket: Socket<H>) {
    fileDescriptor = socket.fileDescriptor
    snapshot = {
      try await socket.withHandler { handler, context in
        SPBadPeerSnapshot(
          failures: handler.pipes.recentFailures, ready: handler.pipes.ready.map { $0.id },
          counters: badPeerCounters(handler.statistics), socket: context.statistics)
      }
    }
    trySend = { message in try socket.trySend(message) }
    next = { try await nextSPMessage(socket) }
    receivesNothing = { try socket.tryReceive() == .wouldBlock }
    showsNoError = { socket.readiness.isDisjoint(with: [.error, .hangup]) }
    listen = { url in try socket.listen(url) }
    abort = { socket.abort() }
  }
}

/// A raw SP peer written by hand, past its header exchange: its
/// connection, its transport's framing, and the id of its pipe on our side.
struct RawSPPeer {
  let client: RawClient
  let framing: SPFraming
  let pipe: UInt64

  /// Sends one message, framed.
  func send(_ payload: [UInt8]) throws { try client.send(framing.frame(payload)) }

  /// The next message's payload (nil if none came in time, or its frame
  /// prefix is not SP's).
  func receive(within timeout: Duration = .seconds(10)) async -> [UInt8]? {
    let prefix = await client.read(framing.prefixLength, within: timeout)
    guard prefix.bytes.count == framing.prefixLength else { return nil }
    if framing == .ipc && prefix.bytes[0] != 0x01 { return nil }
    let length = prefix.bytes.suffix(8).reduce(0) { $0 << 8 | Int($1) }
    let payload = await client.read(length, within: timeout)
    return payload.bytes.count == length ? payload.bytes : nil
  }
}

/// A frame prefix in `framing` for a message of `length` bytes: SP/TCP's
/// 64-bit length, or SP/IPC's type byte 1 and then the length.
func spFramePrefix(_ framing: SPFraming, _ length: UInt64) -> [UInt8] {
  let type: [UInt8] = framing == .ipc ? [0x01] : []
  return type + spLength(length)
}

/// Our socket of one pattern listening on one transport, and what the
/// bad-peer tests do with it.
struct SPBadPeerBench {
  /// The socket's maximum message size (SocketOptions.maximumMessageSize),
  /// smaller than the default so the oversize frame is clearly the option's.
  static let maximumMessageSize = 64 * 1024
  static let headerTimeout: Duration = .seconds(60)

  let pattern: SPBadPeerPattern
  let transport: SPBadPeerTransport
  let target: SPBadPeerTarget
  /// Where a raw peer connects.
  let address: SocketAddress

  init(_ pattern: SPBadPeerPattern, _ transport: SPBadPeerTransport, on loop: EventLoop) throws {
    let options = SocketOptions(maximumMessageSize: Self.maximumMessageSize)
    let target = try pattern.makeSocket(on: loop, options: options, headerTimeout: Self.headerTimeout)
    let address: SocketAddress
    do {
      switch transport {
      case .tcp:
        address = try tcpTarget(try target.listen("tcp://127.0.0.1:0"))
      case .ipc:
        let path = freshIPCPath("bad-\(pattern)")
        _ = try target.listen("ipc://" + path)
        address = try SocketAddress(unixPath: path)
      }
    } catch {
      target.abort()
      throw error
    }
    self.pattern = pattern
    self.transport = transport
    self.target = target
    self.address = address
  }

  /// A raw connection to our socket, nothing sent yet.
  func connect() throws -> RawClient { try RawClient(connectingTo: address) }

  /// A raw peer of the right protocol: it sends its header, reads ours, and
  /// is returned once our socket counts its pipe ready.
  func connectPeer(_ what: String) async throws -> RawSPPeer {
    let known = Set(try await target.snapshot().ready)
    let client = try connect()
    try client.send(pattern.peer.header)
    let header = await client.read(8, within: .seconds(10))
    try #require(
      header.bytes == pattern.ours.header,
      "\(what): our header was \(header.bytes), closure \(String(describing: header.closure))")
    var pipe: UInt64?
    _ = await waitUntilAsync(.seconds(10)) {
      pipe = (try? await target.snapshot())?.ready.first { !known.contains($0) }
      return pipe != nil
    }
    let id = try #require(pipe, "\(what): the peer's pipe never completed its handshake")
    return RawSPPeer(client: client, framing: transport.framing, pipe: id)
  }

  /// One message each way the pattern allows between our socket and the
  /// well-behaved `peer`, checked byte for byte (`n` makes them unique).
  func exchange(with peer: RawSPPeer, _ n: UInt32, _ what: String) async throws {
    let ask = utf8("ask \(n)")
    let answer = utf8("answer \(n)")
    switch pattern {
    case .req0, .surveyor0:
      // Ours asks; the raw REP (RESPONDENT) answers with the id it got.
      let sent = try target.trySend(ask)
      #expect(sent, "\(what): our send was refused")
      let frame = try #require(await peer.receive(), "\(what): our \(pattern) sent nothing to the good peer")
      let (id, body) = try #require(splitRequest(frame), "\(what): \(frame)")
      #expect(id & 0x8000_0000 != 0 && body == ask, "\(what): \(frame)")
      try peer.send(spWord(id) + answer)
      let got = try await target.next()
      #expect(got == answer, "\(what): our \(pattern) received \(String(describing: got))")
    case .rep0, .respondent0:
      // The raw REQ (SURVEYOR) asks; ours answers along the backtrace.
      let id = 0x8000_0000 | n
      try peer.send(spWord(id) + ask)
      let got = try await target.next()
      #expect(got == ask, "\(what): our \(pattern) received \(String(describing: got))")
      let sent = try target.trySend(answer)
      #expect(sent, "\(what): our send was refused")
      let reply = await peer.receive()
      #expect(reply == spWord(id) + answer, "\(what): the good peer got \(String(describing: reply))")
    case .pub0, .push0:
      let sent = try target.trySend(ask)
      #expect(sent, "\(what): our send was refused")
      let got = await peer.receive()
      #expect(got == ask, "\(what): the good peer got \(String(describing: got))")
    case .sub0, .pull0:
      try peer.send(ask)
      let got = try await target.next()
      #expect(got == ask, "\(what): our \(pattern) received \(String(describing: got))")
    case .pair0, .bus0, .pair1:
      // Both ways; PAIR v1 puts a hop count in front (NNG's cooked pair1 sends 1).
      let header = pattern == .pair1 ? spWord(1) : []
      try peer.send(header + ask)
      let got = try await target.next()
      #expect(got == ask, "\(what): our \(pattern) received \(String(describing: got))")
      let sent = try target.trySend(answer)
      #expect(sent, "\(what): our send was refused")
      let reply = await peer.receive()
      #expect(reply == header + answer, "\(what): the good peer got \(String(describing: reply))")
    }
  }

  /// Waits until our socket has recorded one more pipe failure than
  /// `before`, and checks it: one new entry, saying `reason`, naming a pipe
  /// other than `spared` (the good peer's). Returns the snapshot then.
  func expectFailure(
    _ reason: String, since before: SPBadPeerSnapshot, sparing spared: UInt64?, _ what: String
  ) async throws -> SPBadPeerSnapshot {
    let count = before.failures.count
    let failed = await waitUntilAsync(.seconds(10)) {
      ((try? await target.snapshot())?.failures.count ?? count) > count
    }
    let now = try await target.snapshot()
    let added = Array(now.failures.dropFirst(count))
    #expect(failed && added.count == 1, "\(what): new failures \(added)")
    if let entry = added.first {
      #expect(entry.contains(reason), "\(what): \"\(entry)\" does not say \"\(reason)\"")
      if let spared {
        #expect(!entry.hasPrefix("pipe \(spared) ("), "\(what): the good peer's pipe failed: \(entry)")
      }
    }
    return now
  }

  /// Checks what moved from `before` to `after`: pipes added and failed as
  /// given (a failure is a removal), nothing delivered or sent, and of the
  /// handler's counters exactly `deltas` (by field name), nothing else.
  func expectMoves(
    from before: SPBadPeerSnapshot, to after: SPBadPeerSnapshot, added: Int, failed: Int,
    handler deltas: [String: Int], _ what: String
  ) {
    let (b, a) = (before.socket, after.socket)
    #expect(a.pipesAdded == b.pipesAdded + added, "\(what): pipes added \(b.pipesAdded) -> \(a.pipesAdded)")
    #expect(a.pipesRemoved == b.pipesRemoved + failed, "\(what): pipes removed \(b.pipesRemoved) -> \(a.pipesRemoved)")
    #expect(a.pipeFailures == b.pipeFailures + failed, "\(what): pipe failures \(b.pipeFailures) -> \(a.pipeFailures)")
    #expect(a.pipes == b.pipes + added - failed, "\(what): pipes \(b.pipes) -> \(a.pipes)")
    #expect(
      a.messagesReceived == b.messagesReceived && a.bytesReceived == b.bytesReceived,
      "\(what): the bad peer's bytes reached the application: \(b) -> \(a)")
    #expect(a.messagesSent == b.messagesSent && a.staleDrops == b.staleDrops, "\(what): \(b) -> \(a)")
    for name in deltas.keys.sorted() {
      #expect(before.counters[name] != nil, "\(what): the handler has no counter \(name): \(before.counters)")
    }
    for name in Set(before.counters.keys).union(after.counters.keys).sorted() {
      let expected = (before.counters[name] ?? 0) + (deltas[name] ?? 0)
      let now = after.counters[name]
      let shown = now.map { String($0) } ?? "nothing"
      #expect(
        now == expected, "\(what): \(name) went from \(before.counters[name] ?? 0) to \(shown), expected \(expected)")
    }
  }

  /// Our socket as a whole is fine: its fd polls neither POLLERR nor
  /// POLLHUP, its readiness shows no error, and nothing (no error either)
  /// waits for the application.
  func expectHealthy(_ what: String) throws {
    let events = pollEvents(target.fileDescriptor, Int16(POLLIN | POLLOUT))
    #expect(events & Int16(POLLERR | POLLHUP) == 0, "\(what): the socket's fd polls \(events)")
    #expect(target.showsNoError(), "\(what): the socket's readiness shows an error or a hang-up")
    let idle = try target.receivesNothing()
    #expect(idle, "\(what): a message waits for the application")
  }
}
