import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// PAIR v1 on the pipe socket: between two of ours, and against raw TCP
// peers speaking SP by hand, so every byte of the hop-count header is seen.

@Suite("SP PAIR v1 handler on pipe sockets", .timeLimit(.minutes(2)), .testThreads)
struct SPPair1Tests {
  enum Kind: String, CaseIterable, Sendable { case tcp, ipc, inproc }

  /// Which side our socket plays against a raw peer.
  enum Role: String, CaseIterable, Sendable { case listening, dialing }

  @Test("handshake: ours sends 00 53 50 00 00 11 00 00, listening and dialing; a PAIR v0 peer is refused")
  func handshake() async throws {
    try await withSPLoop { loop in
      let listening = try Socket(Pair1Handler(), loop: loop)
      let dialing = try Socket(Pair1Handler(), loop: loop)
      defer {
        listening.abort()
        dialing.abort()
      }
      // Listening: our header comes at once, before the peer's.
      let port = try listenPort(listening)
      let raw = try RawClient(connectingTo: try loopback(port))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x11))
      try raw.send(spHeader(0x11))
      #expect(await waitUntilAsync(.seconds(10)) { await isPaired(listening) })

      // Dialing: the same header, and the peer's makes the pair.
      let rawListener = try RawListener()
      try dialing.dial("tcp://127.0.0.1:\(try #require(rawListener.address.port))")
      let accepted = try #require(await rawListener.accept(within: .seconds(5)))
      #expect(await accepted.read(8, within: .seconds(5)).bytes == spHeader(0x11))
      try accepted.send(spHeader(0x11))
      #expect(await waitUntilAsync(.seconds(10)) { await isPaired(dialing) })

      // A PAIR v0 peer gets our header and loses its connection; the peer
      // we have is not disturbed.
      let v0 = try RawClient(connectingTo: try loopback(port))
      try v0.send(spHeader(0x10))
      let end = await v0.waitForClose(within: .seconds(10))
      #expect(end.closure != nil, "our side kept the PAIR v0 connection")
      #expect(end.bytes == spHeader(0x11), "\(end.bytes)")
      let reason = "incompatible SP peer: protocol 0x10 (PAIR), pair needs 0x11 (PAIR)"
      let saw = await waitUntilAsync(.seconds(5)) { await failures(listening).contains { $0.contains(reason) } }
      let reasons = await failures(listening)
      #expect(saw, "\(reasons)")
      let stats = try await listening.withHandler { h, _ in h.statistics }
      #expect(stats.peersPaired == 1 && stats.refusedPipes == 0, "\(stats)")
      #expect(try listening.trySend(utf8("still paired")))
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(1) + utf8("still paired"))
    }
  }

  @Test("between our sockets: messages both ways, sends made before the peer is up held", arguments: Kind.allCases)
  func bothWays(kind: Kind) async throws {
    try await withSPLoop { loop in
      let a = try Socket(Pair1Handler(), loop: loop)
      let b = try Socket(Pair1Handler(), loop: loop)
      defer {
        a.abort()
        b.abort()
      }
      let url: String
      switch kind {
      case .tcp: url = try dialURL(try a.listen("tcp://127.0.0.1:0"))
      case .ipc:
        let path = freshIPCPath("pair1")
        try a.listen("ipc://" + path)
        url = "ipc://" + path
      case .inproc:
        url = "inproc://sp-pair1-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try a.listen(url)
      }
      for i in 0..<10 { #expect(try a.trySend(utf8("a\(i) over \(kind)"))) }
      try b.dial(url)
      for i in 0..<10 { #expect(try b.trySend(utf8("b\(i) over \(kind)"))) }
      #expect(try b.trySend([UInt8]()))
      for i in 0..<10 { #expect(string(try await nextSPMessage(b)) == "a\(i) over \(kind)") }
      for i in 0..<10 { #expect(string(try await nextSPMessage(a)) == "b\(i) over \(kind)") }
      #expect(try await nextSPMessage(a) == [UInt8]())
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try a.tryReceive() == .wouldBlock)
      #expect(try b.tryReceive() == .wouldBlock)
      let sa = try await a.withHandler { h, _ in h.statistics }
      let sb = try await b.withHandler { h, _ in h.statistics }
      #expect(sa.sent == 10 && sa.received == 11 && sa.heldBack >= 1, "\(sa)")
      #expect(sb.sent == 11 && sb.received == 10, "\(sb)")
      #expect(sa.refusedPipes == 0 && sb.refusedPipes == 0 && sa.peersPaired == 1 && sb.peersPaired == 1)
      for s in [sa, sb] { #expect(s.messagesOverTTL == 0 && s.malformedMessages == 0, "\(s)") }
    }
  }

  @Test(
    "the hop count on the wire: 1 before every message we send; the peer's counts 0 to the TTL delivered without it",
    arguments: Role.allCases)
  func hopCountOnTheWire(role: Role) async throws {
    try await withSPLoop { loop in
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      let (raw, listener) = try await rawPeer(of: pair, role: role)
      defer { _ = listener }
      // Held until the handshake is done, then framed as nngcat frames it:
      // the 8-byte length (9), the hop count 1, the body:
      // 00 00 00 00 00 00 00 09 | 00 00 00 01 | 68 65 6c 6c 6f.
      #expect(try pair.trySend(utf8("hello")))
      let wire = await raw.read(17, within: .seconds(5)).bytes
      #expect(wire == spLength(9) + spWord(1) + utf8("hello"), "\(wire)")
      // An empty message is the hop count alone.
      #expect(try pair.trySend([UInt8]()))
      #expect(await raw.read(12, within: .seconds(5)).bytes == spLength(4) + spWord(1))

      for hops: UInt32 in [1, 0, 2, 8] {
        try raw.send(pair1Frame(hops: hops, utf8("hops \(hops)")))
        #expect(string(try await nextSPMessage(pair)) == "hops \(hops)")
      }
      try raw.send(pair1Frame(hops: 1, []))
      #expect(try await nextSPMessage(pair) == [UInt8]())
      let stats = try await pair.withHandler { h, _ in h.statistics }
      #expect(stats.sent == 2 && stats.received == 5, "\(stats)")
      #expect(stats.messagesOverTTL == 0 && stats.malformedMessages == 0, "\(stats)")
      #expect(pair.statistics.pipeFailures == 0)
    }
  }

  @Test("hop counts above the TTL are dropped and counted, the pipe stays; 0xff is over the TTL, not malformed")
  func overTTL() async throws {
    try await withSPLoop { loop in
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      let raw = try await handshakenPeer(try listenPort(pair))

      // The default TTL is 8: 9 is dropped. Each dropped message comes before
      // a good one on the same stream, so once the good one is received the
      // dropped one has been handled.
      try raw.send(pair1Frame(hops: 9, utf8("nine")) + pair1Frame(hops: 8, utf8("eight")))
      #expect(string(try await nextSPMessage(pair)) == "eight")
      #expect(try pair.tryReceive() == .wouldBlock)

      try await pair.withHandler { h, _ in h.ttl = 3 }
      try raw.send(
        pair1Frame(hops: 4, utf8("four")) + pair1Frame(hops: 0xff, utf8("ff")) + pair1Frame(hops: 3, utf8("three")))
      #expect(string(try await nextSPMessage(pair)) == "three")
      #expect(try pair.tryReceive() == .wouldBlock)

      // Below 1 counts as 1.
      try await pair.withHandler { h, _ in h.ttl = 0 }
      try raw.send(pair1Frame(hops: 2, utf8("two")) + pair1Frame(hops: 1, utf8("one")))
      #expect(string(try await nextSPMessage(pair)) == "one")
      #expect(try pair.tryReceive() == .wouldBlock)

      let stats = try await pair.withHandler { h, _ in h.statistics }
      #expect(stats.messagesOverTTL == 4 && stats.received == 3 && stats.malformedMessages == 0, "\(stats)")
      // The pipe stayed, both ways.
      #expect(pair.statistics.pipeFailures == 0)
      #expect(try pair.trySend(utf8("still paired")))
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(1) + utf8("still paired"))
      #expect(try await pair.withHandler { h, _ in h.statistics.peersPaired } == 1)
    }
  }

  /// Messages NNG's pair1 calls malformed (`rx_malformed`: it frees them
  /// and closes the pipe).
  enum Malformed: String, CaseIterable, Sendable, CustomStringConvertible {
    /// A frame of length 0: no hop count at all.
    case empty
    /// A frame of 3 bytes.
    case short
    /// Hop count 0x01000001: the top byte set.
    case highByte
    /// Hop count 0x100: just above 0xff.
    case above0xff
    var description: String { rawValue }

    var frame: [UInt8] {
      switch self {
      case .empty: spLength(0)
      case .short: spLength(3) + [0, 0, 1]
      case .highByte: pair1Frame(hops: 0x0100_0001, utf8("high"))
      case .above0xff: pair1Frame(hops: 0x100, utf8("256"))
      }
    }

    var reason: String {
      switch self {
      case .empty: "protocol violation: a PAIR v1 message of 0 bytes, shorter than its 4-byte hop count"
      case .short: "protocol violation: a PAIR v1 message of 3 bytes, shorter than its 4-byte hop count"
      case .highByte: "protocol violation: a PAIR v1 hop count of 0x1000001, above 0xff (a high byte is set)"
      case .above0xff: "protocol violation: a PAIR v1 hop count of 0x100, above 0xff (a high byte is set)"
      }
    }
  }

  @Test(
    "a malformed hop count (short message, high byte set) is counted and fails that pipe; the next peer pairs",
    arguments: Malformed.allCases)
  func malformedHopCount(malformed: Malformed) async throws {
    try await withSPLoop { loop in
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      let port = try listenPort(pair)
      let raw = try await handshakenPeer(port)
      try raw.send(pair1Frame(hops: 1, utf8("before")))
      #expect(string(try await nextSPMessage(pair)) == "before")

      try raw.send(malformed.frame + pair1Frame(hops: 1, utf8("after")))
      let end = await raw.waitForClose(within: .seconds(10))
      #expect(end.closure != nil, "our side kept the connection after a \(malformed) message")
      #expect(end.bytes.isEmpty, "\(end.bytes)")
      let saw = await waitUntilAsync(.seconds(5)) { await failures(pair).contains { $0.contains(malformed.reason) } }
      let reasons = await failures(pair)
      #expect(saw, "\(reasons)")
      // What followed the bad message on that pipe is never delivered.
      #expect(try pair.tryReceive() == .wouldBlock)
      let stats = try await pair.withHandler { h, _ in h.statistics }
      #expect(stats.malformedMessages == 1 && stats.received == 1 && stats.messagesOverTTL == 0, "\(stats)")
      #expect(await waitUntil(.seconds(5)) { pair.statistics.pipeFailures == 1 })

      // The place is free again.
      let next = try await handshakenPeer(port)
      try next.send(pair1Frame(hops: 1, utf8("next")))
      #expect(string(try await nextSPMessage(pair)) == "next")
      #expect(try await pair.withHandler { h, _ in h.statistics.peersPaired } == 2)
    }
  }

  @Test("a second peer gets the headers and is closed (NNG_EBUSY); the first keeps working; a later one takes over")
  func secondPeerRefused() async throws {
    try await withSPLoop { loop in
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      let port = try listenPort(pair)
      let first = try await handshakenPeer(port)
      try first.send(pair1Frame(hops: 1, utf8("first")))
      #expect(string(try await nextSPMessage(pair)) == "first")

      // Its message is never delivered: the pipe is refused as its header
      // is accepted.
      let second = try RawClient(connectingTo: try loopback(port))
      try second.send(spHeader(0x11) + pair1Frame(hops: 1, utf8("from the refused one")))
      let end = await second.waitForClose(within: .seconds(10))
      #expect(end.closure != nil, "our side kept the second peer")
      #expect(end.bytes == spHeader(0x11), "\(end.bytes)")
      let reason = "PAIR v1 takes one peer at a time"
      let saw = await waitUntilAsync(.seconds(5)) { await failures(pair).contains { $0.contains(reason) } }
      let reasons = await failures(pair)
      #expect(saw, "\(reasons)")
      #expect(try await pair.withHandler { h, _ in h.statistics.refusedPipes } == 1)

      // The first peer is undisturbed, both ways.
      #expect(try pair.trySend(utf8("to the first")))
      #expect(await first.readFrame(within: .seconds(5)) == spWord(1) + utf8("to the first"))
      try first.send(pair1Frame(hops: 1, utf8("first again")))
      #expect(string(try await nextSPMessage(pair)) == "first again")
      #expect(try pair.tryReceive() == .wouldBlock)

      // Once it leaves, the next peer takes the place.
      first.shutdownWrite()
      #expect(await waitUntilAsync(.seconds(10)) { !(await isPaired(pair)) })
      let third = try await handshakenPeer(port)
      try third.send(pair1Frame(hops: 1, utf8("third")))
      #expect(string(try await nextSPMessage(pair)) == "third")
      #expect(try pair.trySend(utf8("to the third")))
      #expect(await third.readFrame(within: .seconds(5)) == spWord(1) + utf8("to the third"))
      let stats = try await pair.withHandler { h, _ in h.statistics }
      #expect(stats.peersPaired == 2 && stats.refusedPipes == 1 && stats.received == 3, "\(stats)")
    }
  }

  @Test("with no peer, sends are held and the fd stops showing writable; a peer then gets them all, in order")
  func heldWithoutPeer() async throws {
    try await withSPLoop { loop in
      let options = SocketOptions(sendHighWatermark: 8 * 1024, sendLowWatermark: 2 * 1024)
      let a = try Socket(Pair1Handler(), loop: loop, options: options)
      let b = try Socket(Pair1Handler(), loop: loop)
      defer {
        a.abort()
        b.abort()
      }
      let fd = a.fileDescriptor
      let url = try dialURL(try a.listen("tcp://127.0.0.1:0"))
      #expect(pollsWritable(fd))

      let padding = [UInt8](repeating: 0x2e, count: 100)
      func message(_ n: Int) -> [UInt8] { utf8("held \(n) ") + padding }
      var accepted = 0
      while accepted < 10_000, try a.trySend(message(accepted)) { accepted += 1 }
      #expect(accepted > 0 && accepted < 10_000)
      #expect(!a.readiness.contains(.writable))
      #expect(!pollsWritable(fd))
      #expect(a.statistics.messagesSent == 0)
      let held = try await a.withHandler { h, _ in h.statistics }
      #expect(held.heldBack == 1 && held.sent == 0, "\(held)")

      try b.dial(url)
      for n in 0..<accepted {
        let got = try #require(try await nextSPMessage(b), "message \(n) of \(accepted) never came")
        #expect(got == message(n), "message \(n)")
      }
      #expect(await waitUntil(.seconds(5)) { a.readiness.contains(.writable) })
      #expect(pollsWritable(fd))
      #expect(try a.trySend(utf8("after")))
      #expect(string(try await nextSPMessage(b)) == "after")
      let stats = try await a.withHandler { h, _ in h.statistics }
      #expect(stats.sent == accepted + 1 && stats.heldBack >= 1, "\(stats)")
    }
  }
}

// MARK: - Helpers

/// A PAIR v1 frame as a peer sends it on SP/TCP: the length, the hop count,
/// the body.
func pair1Frame(hops: UInt32, _ body: [UInt8]) -> [UInt8] {
  spLength(UInt64(4 + body.count)) + spWord(hops) + body
}

/// Starts `socket` listening on an ephemeral TCP port of 127.0.0.1.
private func listenPort(_ socket: Pair1Socket) throws -> UInt16 {
  let bound = try socket.listen("tcp://127.0.0.1:0")
  guard case .tcp(let address) = bound, let port = address.port else { throw InteropFailure("listen gave \(bound)") }
  return port
}

/// A raw SP peer connected to our socket listening on `port`, its
/// header exchange done.
private func handshakenPeer(_ port: UInt16) async throws -> RawClient {
  let raw = try RawClient(connectingTo: try loopback(port))
  try raw.send(spHeader(0x11))
  let header = await raw.read(8, within: .seconds(5))
  try #require(header.bytes == spHeader(0x11), "header \(header.bytes), closure \(String(describing: header.closure))")
  return raw
}

/// A raw SP peer of `pair` in `role`, its header exchange done, and the
/// raw listener it came from when ours dials (keep it until the end).
private func rawPeer(of pair: Pair1Socket, role: SPPair1Tests.Role) async throws -> (RawClient, RawListener?) {
  switch role {
  case .listening:
    return (try await handshakenPeer(try listenPort(pair)), nil)
  case .dialing:
    let listener = try RawListener()
    try pair.dial("tcp://127.0.0.1:\(try #require(listener.address.port))")
    let raw = try #require(await listener.accept(within: .seconds(5)))
    try raw.send(spHeader(0x11))
    let header = await raw.read(8, within: .seconds(5))
    try #require(header.bytes == spHeader(0x11), "header \(header.bytes)")
    return (raw, listener)
  }
}

/// Whether `pair` has a peer now.
private func isPaired(_ pair: Pair1Socket) async -> Bool {
  (try? await pair.withHandler { h, _ in h.peer != nil }) == true
}

/// Why `pair`'s pipes failed, most recent last.
private func failures(_ pair: Pair1Socket) async -> [String] {
  (try? await pair.withHandler { h, _ in h.pipes.recentFailures }) ?? []
}

/// Whether `fd` polls writable right now.
private func pollsWritable(_ fd: Int32) -> Bool { pollEvents(fd, Int16(POLLOUT)) & Int16(POLLOUT) != 0 }
