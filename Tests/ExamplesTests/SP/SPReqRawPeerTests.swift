import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// REQ v0 (`Socket<Req0Handler>`) checked byte for byte against a REP peer
/// written by hand over raw TCP: request ids, resending, abandoned and
/// stale replies, a pipe that fails with a request on it. Both loop
/// engines.
@Suite("SP REQ handler against a raw REP peer", .timeLimit(.minutes(1)), .testThreads)
struct SPReqRawPeerTests {
  static let reqHeader = spHeader(0x30)
  static let repHeader = spHeader(0x31)

  /// A REQ socket dialing a raw REP that has exchanged headers with it (the
  /// pipe is ready when this returns). The dialer re-dials only after a
  /// minute, so a failed pipe stays gone during a test.
  static func reqAgainstRawRep(
    _ loop: EventLoop, resendInterval: Duration = .seconds(60),
    headerTimeout: Duration = SPPipes.defaultHeaderTimeout
  ) async throws -> (Req0Socket, RawClient, RawListener) {
    let listener = try RawListener()
    let req = try Socket(Req0Handler(resendInterval: resendInterval, headerTimeout: headerTimeout), loop: loop)
    do {
      try req.dial(try url(listener), reconnect: ReconnectPolicy(minimum: .seconds(60)))
      let rep = try #require(await listener.accept(within: .seconds(5)))
      #expect(await rep.read(8, within: .seconds(5)).bytes == reqHeader)
      try rep.send(repHeader)
      try #require(await waitUntilAsync(.seconds(5)) { await readyPipes(req) == 1 })
      return (req, rep, listener)
    } catch {
      req.abort()
      throw error
    }
  }

  /// The tcp:// URL of a raw listener.
  static func url(_ listener: RawListener) throws -> String {
    "tcp://127.0.0.1:\(try #require(listener.address.port))"
  }

  static func statistics(_ req: Req0Socket) async throws -> Req0Handler.Statistics {
    try await req.withHandler { h, _ in h.statistics }
  }

  @Test("request ids have the top bit set and increment by one", arguments: interopBackends)
  func requestIDs(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      var ids: [UInt32] = []
      for n in 0..<4 {
        #expect(try req.trySend(utf8("q\(n)")))
        let (id, body) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
        #expect(body == utf8("q\(n)"))
        ids.append(id)
        try rep.send(spRequest(id: id, utf8("a\(n)")))
        #expect(string(try await nextSPMessage(req)) == "a\(n)")
      }
      #expect(ids.allSatisfy { $0 & 0x8000_0000 != 0 }, "\(ids)")
      for (a, b) in zip(ids, ids.dropFirst()) { #expect(b == (a &+ 1) | 0x8000_0000, "\(ids)") }
      let stats = try await Self.statistics(req)
      #expect(stats.ignoredReplies == 0 && stats.timedResends == 0 && stats.repliesDelivered == 4, "\(stats)")
    }
  }

  @Test("an unanswered request is sent again, byte for byte, with the same id", arguments: interopBackends)
  func resend(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop, resendInterval: .milliseconds(100))
      defer { req.abort() }
      #expect(try req.trySend(utf8("again")))
      let first = try #require(await rep.readFrame(within: .seconds(5)))
      // No answer: the same frame comes again.
      let second = try #require(await rep.readFrame(within: .seconds(5)))
      #expect(second == first)
      #expect(try await Self.statistics(req).timedResends >= 1)
      let (id, _) = try #require(splitRequest(first))
      try rep.send(spRequest(id: id, utf8("done")))
      #expect(string(try await nextSPMessage(req)) == "done")
    }
  }

  @Test("a new request drops the replies to the previous one: queued, and arriving late", arguments: interopBackends)
  func abandonedReplies(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      #expect(try req.trySend(utf8("first")))
      let (first, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      try rep.send(spRequest(id: first, utf8("reply to first")))
      // The reply is queued (the fd turns readable) and nobody receives it.
      #expect(await waitUntil(.seconds(5)) { pollEvents(req.fileDescriptor) & Int16(POLLIN) != 0 })
      #expect(try req.trySend(utf8("second")))
      // The send abandoned the first request: its queued reply is gone, and
      // the fd says so as soon as the send returns.
      #expect(pollEvents(req.fileDescriptor) & Int16(POLLIN) == 0)
      #expect(try req.tryReceive() == .wouldBlock)
      #expect(req.statistics.staleDrops == 1)
      let (second, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      #expect(second != first)
      // A late duplicate of the first reply, then the second's own.
      try rep.send(spRequest(id: first, utf8("late")))
      try rep.send(spRequest(id: second, utf8("reply to second")))
      #expect(string(try await nextSPMessage(req)) == "reply to second")
      let stats = try await Self.statistics(req)
      #expect(stats.ignoredReplies == 1 && stats.repliesDelivered == 2, "\(stats)")
      #expect(try req.tryReceive() == .wouldBlock)
    }
  }

  @Test(
    "application code on the loop's thread takes each reply and sends the next request there",
    arguments: interopBackends)
  func requestsFromTheLoop(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      #expect(try await loop.submit { try req.trySend(utf8("q0")) })
      var replies: [String] = []
      for n in 0..<3 {
        let (id, body) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
        #expect(body == utf8("q\(n)"))
        try rep.send(spRequest(id: id, utf8("a\(n)")))
        // On the loop, in one task: receive the reply, send the next
        // request (neither may wait for the loop, which is this thread).
        var reply: String?
        _ = try await waitUntil(.seconds(5)) {
          reply = try loop.submitAndWait { () throws -> String? in
            guard case .message(let message) = try req.tryReceive() else { return nil }
            if n < 2 { _ = try req.trySend(utf8("q\(n + 1)")) }
            return string(message)
          }
          return reply != nil
        }
        replies.append(try #require(reply, "no reply \(n)"))
      }
      #expect(replies == ["a0", "a1", "a2"])
      #expect(try await Self.statistics(req).ignoredReplies == 0)
    }
  }

  @Test("a resend interval of zero never resends (no tight loop)")
  func zeroResendInterval() async throws {
    try await withLoop(.epoll) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop, resendInterval: .zero)
      defer { req.abort() }
      #expect(try req.trySend(utf8("once")))
      let first = await rep.readFrame(within: .seconds(5))
      #expect(first.flatMap(splitRequest)?.body == utf8("once"))
      // Nothing more comes while the request waits.
      #expect(await rep.read(1, within: .milliseconds(300)).bytes.isEmpty)
      #expect(try await Self.statistics(req).timedResends == 0)
    }
  }

  @Test("a reply to an earlier request is ignored and counted", arguments: interopBackends)
  func staleReply(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      #expect(try req.trySend(utf8("one")))
      let (first, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      try rep.send(spRequest(id: first, utf8("reply one")))
      #expect(string(try await nextSPMessage(req)) == "reply one")

      #expect(try req.trySend(utf8("two")))
      let (second, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      // The first reply again (stale), then the right one, in one write.
      try rep.send(spRequest(id: first, utf8("reply one again")) + spRequest(id: second, utf8("reply two")))
      #expect(string(try await nextSPMessage(req)) == "reply two")
      #expect(try await Self.statistics(req).ignoredReplies == 1)
      #expect(try req.tryReceive() == .wouldBlock)
    }
  }

  /// The first design's socket stopped its resend timer when its one
  /// connection failed. With pipes, the request outlives the pipe: nothing
  /// is resent while no pipe is up, and it goes again, once and unchanged,
  /// on the next pipe that completes its handshake.
  @Test(
    "a request on a pipe that fails is not resent while no pipe is up; the next pipe gets it, same id",
    arguments: interopBackends)
  func resendAfterPipeFailure(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, listener) = try await Self.reqAgainstRawRep(loop, resendInterval: .milliseconds(20))
      defer { req.abort() }
      #expect(try req.trySend(utf8("x")))
      let frame = try #require(await rep.readFrame(within: .seconds(5)))
      // An oversize frame fails the pipe (only).
      try rep.send(spLength(2 << 20))
      #expect(await rep.waitForClose(within: .seconds(5)).closure != nil)
      #expect(await waitUntil(.seconds(5)) { req.pipeCount == 0 })
      let reasons = try await req.withHandler { h, _ in h.pipes.recentFailures }
      #expect(
        reasons.contains { $0.contains("message of 2097152 bytes exceeds the limit of 1048576 bytes") }, "\(reasons)")
      #expect(req.readiness.isDisjoint(with: [.error, .hangup]), "the socket itself did not fail")
      let before = try await Self.statistics(req)
      // Ten resend intervals with no pipe: nothing is counted as resent.
      try await Task.sleep(for: .milliseconds(200))
      let idle = try await Self.statistics(req)
      #expect(idle.timedResends == before.timedResends && idle.pipeLossResends == 0, "\(idle)")

      try req.dial(try Self.url(listener), reconnect: ReconnectPolicy(minimum: .seconds(60)))
      let next = try #require(await listener.accept(within: .seconds(5)))
      #expect(await next.read(8, within: .seconds(5)).bytes == Self.reqHeader)
      try next.send(Self.repHeader)
      #expect(await next.readFrame(within: .seconds(5)) == frame)
      let (id, _) = try #require(splitRequest(frame))
      try next.send(spRequest(id: id, utf8("answered")))
      #expect(string(try await nextSPMessage(req)) == "answered")
      let after = try await Self.statistics(req)
      #expect(after.pipeLossResends == 1 && after.repliesDelivered == 1, "\(after)")
    }
  }
}
