import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// Inputs that used to trap in the first SP sockets: durations too long for
/// the loop's clock as SP timeouts, and protocol ids. The handlers take the
/// ids as `SPPipes.init` arguments, so a handler without them does not
/// compile; what is left to check at run time is an id nobody knows.
@Suite("SP handlers take any input without trapping", .timeLimit(.minutes(1)), .testThreads)
struct SPHandlerNoTrapTests {
  @Test("a resend interval too long for the clock never resends", arguments: interopBackends)
  func hugeResendInterval(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await SPReqRawPeerTests.reqAgainstRawRep(loop, resendInterval: .seconds(Int64.max))
      defer { req.abort() }
      #expect(try req.trySend(utf8("once")))
      let first = try #require(await rep.readFrame(within: .seconds(5)))
      // No resend comes (a wrapped deadline would resend at once, again and again).
      #expect(await rep.read(1, within: .milliseconds(300)).bytes.isEmpty)
      #expect(try await SPReqRawPeerTests.statistics(req).timedResends == 0)
      // The request is still awaited: its reply is delivered.
      let (id, _) = try #require(splitRequest(first))
      try rep.send(spRequest(id: id, utf8("done")))
      #expect(string(try await nextSPMessage(req)) == "done")
    }
  }

  @Test("a header timeout too long for the clock never drops the peer", arguments: interopBackends)
  func hugeHeaderTimeout(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let rep = try Socket(Rep0Handler(headerTimeout: .seconds(Int64.max)), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(rep.listen("tcp://127.0.0.1:0")))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x31))
      // No header from the peer: the pipe stays up, nothing failed.
      let rest = await raw.read(1, within: .milliseconds(300))
      #expect(rest.bytes.isEmpty && rest.closure == nil)
      #expect(rep.pipeCount == 1 && rep.statistics.pipeFailures == 0)
    }
  }

  @Test("a dialed socket with a header timeout too long for the clock waits for the header")
  func hugeDialHeaderTimeout() async throws {
    try await withLoop(.epoll) { loop in
      let listener = try RawListener()
      let req = try Socket(Req0Handler(headerTimeout: .seconds(Int64.max)), loop: loop)
      defer { req.abort() }
      try req.dial(try SPReqRawPeerTests.url(listener))
      let rep = try #require(await listener.accept(within: .seconds(5)))
      #expect(await rep.read(8, within: .seconds(5)).bytes == spHeader(0x30))
      try await Task.sleep(for: .milliseconds(300))
      #expect(req.pipeCount == 1 && req.statistics.pipeFailures == 0)
      #expect(req.readiness.isDisjoint(with: [.error, .hangup]))
    }
  }

  @Test("each handler sends its own protocol id and accepts only its peer's")
  func protocolIDs() {
    let req = Req0Handler().pipes
    #expect(req.protocolID == .req0 && req.peerProtocolID == .rep0)
    #expect(req.protocolID.header == spHeader(0x30))
    let rep = Rep0Handler().pipes
    #expect(rep.protocolID == .rep0 && rep.peerProtocolID == .req0)
    let sub = Sub0Handler().pipes
    #expect(sub.protocolID == .sub0 && sub.peerProtocolID == .pub0)
    let pub = Pub0Handler().pipes
    #expect(pub.protocolID == .pub0 && pub.peerProtocolID == .sub0)
    let pair = Pair0Handler().pipes
    #expect(pair.protocolID == .pair0 && pair.peerProtocolID == .pair0)
    #expect(pair.protocolID.header == spHeader(0x10))
    for id in SPProtocolID.allCases { #expect(id.header == spHeader(id.rawValue), "\(id)") }
  }

  @Test("a peer header with a protocol id nobody knows fails that pipe with a clear reason, no trap")
  func unknownPeerProtocol() async throws {
    try await withLoop(.epoll) { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(rep.listen("tcp://127.0.0.1:0")))
      try raw.send(spHeader(0x99))
      #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
      let reasons = try await rep.withHandler { h, _ in h.pipes.recentFailures }
      #expect(
        reasons.contains { $0.contains("incompatible SP peer: protocol 0x99 (unknown), rep needs 0x30 (REQ)") },
        "\(reasons)")
      #expect(rep.readiness.isDisjoint(with: [.error, .hangup]))
    }
  }

  // Found by Fuzz/Sources/SPFramesFuzzer (its corpus keeps the input as a
  // seed, regression-unlimited-length-pull): with no size limit
  // (maximumMessageSize Int.max), a frame length of Int.max passed the
  // limit check, and adding the 8-byte prefix to it overflowed, a trap that
  // any peer could set off with 16 bytes.
  @Test("no size limit: a frame length of Int.max waits for its bytes instead of trapping")
  func unlimitedFrameLength() async throws {
    try await withLoop(.epoll) { loop in
      let pull = try Socket(Pull0Handler(), loop: loop, options: SocketOptions(maximumMessageSize: .max))
      defer { pull.abort() }
      let bound = try pull.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try raw.send(spHeader(0x50) + spLength(UInt64(Int.max)))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x51))
      // The frame is incomplete, not an error: the pipe fails only when the
      // peer ends in the middle of it.
      raw.shutdownWrite()
      let failed = await waitUntilAsync(.seconds(5)) {
        let failures = (try? await pull.withHandler { h, _ in h.pipes.recentFailures }) ?? []
        return failures.last?.contains("closed mid-frame") == true
      }
      #expect(failed, "\(pull.statistics)")
      #expect(pull.statistics.pipeFailures == 1)
    }
  }
}
