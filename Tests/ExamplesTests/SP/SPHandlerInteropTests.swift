import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// The SP handlers against the real peers (nngcat from NNG 1.5, nanocat
// from nanomsg 1.1) as child processes. A missing tool skips its suite,
// saying so; USERPROTO_REQUIRE_PEERS=1 makes the suite run and fail.

/// The transports the REQ/REP interop runs over.
enum SPInteropTransport: String, CaseIterable, Sendable { case tcp, ipc }

@Suite(
  "SP handlers interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPHandlerNNGTests {
  @Test("nngcat --req against our REP gets its body back", arguments: SPInteropTransport.allCases)
  func theirRequests(transport: SPInteropTransport) async throws {
    try await SPInterop.theirRequestsToOurRep(.nngcat, transport)
  }

  @Test(
    "our REQ against nngcat --rep gets its reply; nngcat printed our request", arguments: SPInteropTransport.allCases)
  func ourRequest(transport: SPInteropTransport) async throws {
    try await SPInterop.ourRequestToTheirRep(.nngcat, transport)
  }

  @Test("our PUB feeds nngcat --sub only its topic")
  func ourPublisher() async throws {
    try await SPInterop.ourPubToTheirSub(.nngcat)
  }

  @Test("nngcat --pub feeds our SUB by topic; unsubscribing stops delivery")
  func theirPublisher() async throws {
    try await SPInterop.theirPubToOurSub(.nngcat)
  }
}

@Suite(
  "SP handlers interop with nanocat (nanomsg)",
  .enabled(
    if: PeerTool.nanocat.shouldRun,
    "nanocat (nanomsg-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPHandlerNanomsgTests {
  @Test("nanocat --req against our REP gets its body back", arguments: SPInteropTransport.allCases)
  func theirRequests(transport: SPInteropTransport) async throws {
    try await SPInterop.theirRequestsToOurRep(.nanocat, transport)
  }

  @Test("our REQ against nanocat --rep gets its reply", arguments: SPInteropTransport.allCases)
  func ourRequest(transport: SPInteropTransport) async throws {
    try await SPInterop.ourRequestToTheirRep(.nanocat, transport)
  }

  @Test("our PUB feeds nanocat --sub only its topic")
  func ourPublisher() async throws {
    try await SPInterop.ourPubToTheirSub(.nanocat)
  }

  @Test("nanocat --pub feeds our SUB by topic; unsubscribing stops delivery")
  func theirPublisher() async throws {
    try await SPInterop.theirPubToOurSub(.nanocat)
  }
}

enum SPInterop {
  /// Their REQ processes (three at once) against our REP echo server.
  static func theirRequestsToOurRep(_ tool: PeerTool, _ transport: SPInteropTransport) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let url: String
      switch transport {
      case .tcp: url = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      case .ipc:
        url = "ipc://" + freshIPCPath("\(tool)-rep")
        try rep.listen(url)
      }
      let served = Task {
        var count = 0
        do {
          for try await request in rep.messages {
            try await rep.send(request)
            count += 1
          }
        } catch {}
        return count
      }
      let bodies = (1...3).map { "\(tool) request \($0) over \(transport): \"quoted\" \\ tab\there é" }
      // Generous: the replies come from an app Task, and under a loaded test
      // run the cooperative pool can be busy with blocking tests for seconds.
      let peers = try bodies.map { try PeerProcess(tool, tool.requester(dial: url, body: $0, seconds: 30)) }
      for (peer, body) in zip(peers, bodies) {
        #expect(await peer.finish(within: .seconds(40)) == .code(0), "\(peer)")
        #expect(peer.quotedMessages == [body], "\(peer)")
      }
      let stats = try await rep.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.repliesSent == 3, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
      rep.abort()
      #expect(await served.value == 3)
    }
  }

  /// Our REQ against their REP answering "world".
  static func ourRequestToTheirRep(_ tool: PeerTool, _ transport: SPInteropTransport) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let peer: PeerProcess
      let url: String
      switch transport {
      case .tcp:
        let (started, port) = try await startListeningPeer(tool) { tool.replier(listen: $0, reply: "world") }
        peer = started
        url = "tcp://127.0.0.1:\(port)"
      case .ipc:
        let path = freshIPCPath("\(tool)-theirrep")
        url = "ipc://" + path
        peer = try PeerProcess(tool, tool.replier(listen: url, reply: "world"))
        #expect(await waitUntil(.seconds(5)) { Interop.acceptsConnections(path) || peer.hasExited }, "\(peer)")
      }
      defer { peer.terminate() }
      let req = try Socket(Req0Handler(), loop: loop)
      defer { req.abort() }
      try req.dial(url)
      let body = "hello from our REQ over \(transport)"
      #expect(try await request(req, body) == "world", "\(peer)")
      #expect(await waitUntil(.seconds(5)) { peer.quotedMessages == [body] }, "\(peer)")
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.ignoredReplies == 0 && stats.timedResends == 0 && stats.repliesDelivered == 1)
      if tool == .nngcat {
        #expect(await peer.finish(within: .seconds(5)) == .code(0), "\(peer)")
      }
    }
  }

  /// Our PUB feeding their SUB subscribed to "news".
  static func ourPubToTheirSub(_ tool: PeerTool) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let pub = try Socket(Pub0Handler(), loop: loop)
      defer { pub.abort() }
      let url = try dialURL(try pub.listen("tcp://127.0.0.1:0"))
      let wanted = 10
      let peer = try PeerProcess(tool, tool.subscriber(dial: url, topic: "news", count: wanted))
      defer { peer.terminate() }
      // Rounds of matching and non-matching messages until the peer exits:
      // nngcat after `wanted` matches; nanocat 10 s after its last match, so
      // matches stop once it has printed enough. (60 s: those 10 quiet
      // seconds, and a loaded test run can hold this task off for more.)
      var round = 0
      let exited = try await waitUntil(.seconds(60), every: .milliseconds(20)) {
        if peer.hasExited { return true }
        round += 1
        for text in ["sports: \(round)", "new", "weather news \(round)", "News: \(round)"] {
          _ = try pub.trySend(utf8(text))
        }
        if tool == .nngcat || peer.quotedMessages.count < wanted { _ = try pub.trySend(utf8("news: \(round)")) }
        return false
      }
      #expect(exited, "\(peer)")
      #expect(peer.exit == .code(0), "\(peer)")
      let printed = peer.quotedMessages
      if tool == .nngcat {
        #expect(printed.count == wanted, "\(peer)")
      } else {
        // nanocat stops after a quiet spell, which a loaded machine can
        // cause before `wanted` matches: at least a few must have arrived.
        #expect(printed.count >= 2, "\(peer)")
      }
      #expect(printed.allSatisfy { $0.hasPrefix("news: ") }, "\(printed)")
      let stats = try await pub.withHandler { h, _ in h.statistics }
      #expect(stats.delivered >= 5 * printed.count && stats.drops == 0, "\(stats)")
    }
  }

  /// Their PUB publishing "news: from TOOL" every second, feeding two of
  /// our SUB sockets: one on "news" (later unsubscribed), one on "sports".
  static func theirPubToOurSub(_ tool: PeerTool) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let message = utf8("news: from \(tool)")
      let (peer, port) = try await startListeningPeer(tool) {
        tool.publisher(listen: $0, message: String(decoding: message, as: UTF8.self))
      }
      defer { peer.terminate() }
      let news = try Socket(Sub0Handler(subscriptions: [utf8("news")]), loop: loop)
      let sports = try Socket(Sub0Handler(subscriptions: [utf8("sports")]), loop: loop)
      defer {
        news.abort()
        sports.abort()
      }
      try news.dial("tcp://127.0.0.1:\(port)")
      try sports.dial("tcp://127.0.0.1:\(port)")
      #expect(try await nextSPMessage(news, within: .seconds(15)) == message, "\(peer)")
      let filtered = try await news.withHandler { h, _ in
        h.unsubscribe("news")
        return h.statistics.filtered
      }
      while case .message(let m) = try news.tryReceive() { #expect(m == message) }
      #expect(
        await waitUntilAsync(.seconds(15)) {
          (try? await news.withHandler { h, _ in h.statistics.filtered }) ?? 0 >= filtered + 2
        }, "\(peer)")
      #expect(
        await waitUntilAsync(.seconds(5)) {
          (try? await sports.withHandler { h, _ in h.statistics.filtered }) ?? 0 >= 2
        }, "\(peer)")
      #expect(try news.tryReceive() == .wouldBlock)
      #expect(try sports.tryReceive() == .wouldBlock)
      peer.terminate()
      // The peer is gone: both pipes go, nothing more is delivered, and the
      // sockets stay (re-dialing), their fds showing no error.
      #expect(await waitUntil(.seconds(5)) { news.pipeCount == 0 && sports.pipeCount == 0 }, "\(peer)")
      #expect(try news.tryReceive() == .wouldBlock)
      #expect(try sports.tryReceive() == .wouldBlock)
      #expect(news.readiness.isDisjoint(with: [.error, .hangup]))
    }
  }
}
