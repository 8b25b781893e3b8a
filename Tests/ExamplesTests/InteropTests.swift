import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// Interoperability with the real SP implementations: nngcat (NNG 1.5) and
// nanocat (nanomsg 1.1) run as child processes against our sockets on
// 127.0.0.1. Each scenario runs against both tools, on both loop backends.
// What the peers do (checked against nng 1.5.2 and nanomsg 1.1.5): nngcat's
// time options are whole seconds and its dial is synchronous; nanocat
// connects in the background and its REP and PUB never exit by themselves;
// a REQ against an incompatible peer hangs. So every child runs under a hard
// timeout and is killed if it overruns.

// A missing tool skips its suite, saying so; with USERPROTO_REQUIRE_PEERS=1
// (as in CI) the suite runs anyway and every test fails on the missing tool.
@Suite(
  "SP interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  // Per test: the waits of the longest scenario add up to over a minute
  // on a loaded machine (they end as soon as their condition holds).
  .timeLimit(.minutes(2)), .testThreads)
struct NNGInteropTests {
  @Test("nngcat --req against our echo server gets each distinct body back", arguments: interopBackends)
  func theirRequests(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirRequestsToOurEchoServer(.nngcat, backend)
  }

  @Test("our REQ against nngcat --rep gets its reply; nngcat printed our request", arguments: interopBackends)
  func ourRequest(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourRequestToTheirReplier(.nngcat, backend)
  }

  @Test("our publisher feeds nngcat --sub only the topic it subscribed to", arguments: interopBackends)
  func ourPublisher(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourPublisherToTheirSubscriber(.nngcat, backend)
  }

  @Test("nngcat --pub feeds our SUB sockets by topic; unsubscribing stops delivery", arguments: interopBackends)
  func theirPublisher(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirPublisherToOurSubscribers(.nngcat, backend)
  }

  @Test("nngcat --pub dialing our echo server is not served and leaves other clients alone", arguments: interopBackends)
  func incompatibleDialer(backend: EventLoop.BackendChoice) async throws {
    try await Interop.incompatiblePeerAgainstEchoServer(.nngcat, backend)
  }

  @Test("our SUB connected to nngcat --rep shows POLLERR and reports the protocol id", arguments: interopBackends)
  func subscriberAgainstReplier(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourSubscriberAgainstTheirReplier(.nngcat, backend)
  }

  @Test("over ipc://, nngcat --req gets its body back from our echo server", arguments: interopBackends)
  func theirRequestsOverIPC(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirRequestOverIPC(.nngcat, backend)
  }

  @Test("over ipc://, our REQ gets its reply from nngcat --rep", arguments: interopBackends)
  func ourRequestOverIPC(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourRequestOverIPC(.nngcat, backend)
  }
}

@Suite(
  "SP interop with nanocat (nanomsg)",
  .enabled(
    if: PeerTool.nanocat.shouldRun,
    "nanocat (nanomsg-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  // Per test: the waits of the longest scenario add up to over a minute
  // on a loaded machine (they end as soon as their condition holds).
  .timeLimit(.minutes(2)), .testThreads)
struct NanomsgInteropTests {
  @Test("nanocat --req against our echo server gets each distinct body back", arguments: interopBackends)
  func theirRequests(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirRequestsToOurEchoServer(.nanocat, backend)
  }

  @Test("our REQ against nanocat --rep gets its reply; nanocat printed our request", arguments: interopBackends)
  func ourRequest(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourRequestToTheirReplier(.nanocat, backend)
  }

  @Test("our publisher feeds nanocat --sub only the topic it subscribed to", arguments: interopBackends)
  func ourPublisher(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourPublisherToTheirSubscriber(.nanocat, backend)
  }

  @Test("nanocat --pub feeds our SUB sockets by topic; unsubscribing stops delivery", arguments: interopBackends)
  func theirPublisher(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirPublisherToOurSubscribers(.nanocat, backend)
  }

  @Test(
    "nanocat --pub dialing our echo server is not served and leaves other clients alone", arguments: interopBackends)
  func incompatibleDialer(backend: EventLoop.BackendChoice) async throws {
    try await Interop.incompatiblePeerAgainstEchoServer(.nanocat, backend)
  }

  @Test("our SUB connected to nanocat --rep shows POLLERR and reports the protocol id", arguments: interopBackends)
  func subscriberAgainstReplier(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourSubscriberAgainstTheirReplier(.nanocat, backend)
  }

  @Test("over ipc://, nanocat --req gets its body back from our echo server", arguments: interopBackends)
  func theirRequestsOverIPC(backend: EventLoop.BackendChoice) async throws {
    try await Interop.theirRequestOverIPC(.nanocat, backend)
  }

  @Test("over ipc://, our REQ gets its reply from nanocat --rep", arguments: interopBackends)
  func ourRequestOverIPC(backend: EventLoop.BackendChoice) async throws {
    try await Interop.ourRequestOverIPC(.nanocat, backend)
  }
}

@Suite("SP subscriptions change at run time", .timeLimit(.minutes(1)), .testThreads)
struct SubscriptionTests {
  @Test(
    "after unsubscribing, matching messages stop while another subscription keeps working",
    arguments: interopBackends)
  func unsubscribe(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let publisher = try Publisher(on: try loopback(0), loop: loop)
      defer { publisher.close() }
      let sub = try SubSocket.connect(to: publisher.localAddress, loop: loop)
      defer { sub.abort() }
      sub.subscribe("a")
      sub.subscribe("b")
      #expect(await waitUntil(.seconds(5)) { publisher.subscriberCount == 1 })
      func publish(_ text: String) { _ = publisher.publish(text) }
      func next() async throws -> String? {
        guard case .message(let m) = try await nextMessage(sub, within: .seconds(5)) else { return nil }
        return String(decoding: m, as: UTF8.self)
      }

      publish("a1")
      publish("c1")
      publish("b1")
      #expect(try await next() == "a1")
      #expect(try await next() == "b1")
      #expect(sub.filteredMessages == 1)

      sub.unsubscribe("a")
      publish("a2")
      publish("b2")
      // One connection keeps order: a2 arrived before b2 and was dropped.
      #expect(try await next() == "b2")
      #expect(sub.filteredMessages == 2)

      sub.subscribe("a")
      publish("a3")
      #expect(try await next() == "a3")

      sub.unsubscribe("a")
      sub.unsubscribe("b")
      #expect(sub.subscriptions.isEmpty)
      publish("a4")
      publish("b4")
      #expect(await waitUntil(.seconds(5)) { sub.filteredMessages == 4 })
      #expect(try sub.tryReceive() == .wouldBlock)
      let statistics = publisher.statistics
      #expect(statistics.published == 8 && statistics.delivered == 8 && statistics.dropped == 0)
    }
  }
}

/// Whether a peer tool's suite runs: when it is installed, or when
/// USERPROTO_REQUIRE_PEERS=1 says a missing one must fail.
func peerSuiteRuns(installed: Bool, requirePeers: String?) -> Bool { installed || requirePeers == "1" }

extension PeerTool {
  var shouldRun: Bool {
    peerSuiteRuns(installed: isInstalled, requirePeers: getenv("USERPROTO_REQUIRE_PEERS").map { String(cString: $0) })
  }

  /// Fails the test when the tool is missing (the suite only runs then when
  /// USERPROTO_REQUIRE_PEERS=1).
  func require() throws {
    try #require(isInstalled, "USERPROTO_REQUIRE_PEERS=1 but \(path) is not installed")
  }
}

@Suite("Interop peer requirement", .testThreads)
struct PeerRequirementTests {
  @Test("a missing peer skips its suite unless USERPROTO_REQUIRE_PEERS=1")
  func decision() {
    #expect(peerSuiteRuns(installed: true, requirePeers: nil))
    #expect(!peerSuiteRuns(installed: false, requirePeers: nil))
    #expect(!peerSuiteRuns(installed: false, requirePeers: "0"))
    #expect(peerSuiteRuns(installed: false, requirePeers: "1"))
  }
}

/// The scenarios, each run against a peer tool on a loop backend.
enum Interop {
  static func url(_ address: SocketAddress) throws -> String {
    "tcp://127.0.0.1:\(try #require(address.port))"
  }

  /// 1. Their REQ processes, at once, against our echo server.
  static func theirRequestsToOurEchoServer(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      // Distinct bodies, with characters the quoted format escapes.
      let bodies = (1...3).map { "\(tool) request \($0) on \(backend): \"quoted\" \\ tab\there é" }
      let peers = try bodies.map {
        try PeerProcess(tool, tool.requester(dial: try url(server.localAddress), body: $0, seconds: 5))
      }
      for (peer, body) in zip(peers, bodies) {
        let exit = await peer.finish(within: .seconds(10))
        #expect(exit == .code(0), "\(peer)")
        #expect(peer.quotedMessages == [body], "\(peer)")
      }
      #expect(server.requestsServed == bodies.count)
    }
  }

  /// 2. Our REQ against their REP answering "world".
  static func ourRequestToTheirReplier(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let (peer, port) = try await startListeningPeer(tool) { tool.replier(listen: $0, reply: "world") }
      defer { peer.terminate() }
      let socket = try ReqSocket.connect(to: try loopback(port), loop: loop)
      defer { socket.abort() }
      let request = "hello from \(backend)"
      #expect(try await roundTrip(socket, request) == "world", "\(peer)")
      #expect(await waitUntil(.seconds(5)) { peer.quotedMessages == [request] }, "\(peer)")
      #expect(socket.ignoredReplies == 0 && socket.resends == 0)
      if tool == .nngcat {
        // With --count 1 it exits by itself once it has replied.
        #expect(await peer.finish(within: .seconds(5)) == .code(0), "\(peer)")
      }
    }
  }

  /// 3. Our publisher feeding their SUB subscribed to "news".
  static func ourPublisherToTheirSubscriber(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let publisher = try Publisher(on: try loopback(0), loop: loop)
      defer { publisher.close() }
      let wanted = 20
      let peer = try PeerProcess(
        tool, tool.subscriber(dial: try url(publisher.localAddress), topic: "news", count: wanted))
      defer { peer.terminate() }
      // Rounds of matching and non-matching messages until the peer exits:
      // nngcat after `wanted` matches; nanocat 10 s after its last match, so
      // matches stop once it has printed enough.
      var round = 0
      // (60 s: nanocat needs 10 quiet seconds after its matches, and a loaded
      // test run can hold this task off the cooperative pool for many seconds.)
      let exited = await waitUntil(.seconds(60)) {
        if peer.hasExited { return true }
        round += 1
        for text in ["sports: \(round)", "new", "weather news \(round)", "News: \(round)", ""] {
          _ = publisher.publish(text)
        }
        if peer.quotedMessages.count < wanted {
          _ = publisher.publish("news: \(round)")
          _ = publisher.publish("newsflash \(round)")
        }
        return false
      }
      #expect(exited, "\(peer)")
      #expect(peer.exit == .code(0), "\(peer)")
      let printed = peer.quotedMessages
      let lines = peer.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
      #expect(lines.count == printed.count, "every line is one quoted message: \(peer)")
      if tool == .nngcat {
        #expect(printed.count == wanted, "\(peer)")
      } else {
        // nanocat stops after a quiet spell, which a loaded machine can
        // cause before `wanted` matches: at least a few must have arrived.
        #expect(printed.count >= 2, "\(peer)")
      }
      // Only prefix matches ("news: " and "newsflash "), nothing else.
      #expect(printed.allSatisfy { $0.hasPrefix("news: ") || $0.hasPrefix("newsflash ") }, "\(printed)")
      #expect(publisher.statistics.delivered > printed.count)
    }
  }

  /// 4. Their PUB (publishing "news: from TOOL") feeding two of our SUB
  /// sockets: one subscribed to "news", later unsubscribed; one to "sports".
  static func theirPublisherToOurSubscribers(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let message = Array("news: from \(tool)".utf8)
      let (peer, port) = try await startListeningPeer(tool) {
        tool.publisher(listen: $0, message: String(decoding: message, as: UTF8.self))
      }
      defer { peer.terminate() }
      let news = try SubSocket.connect(to: try loopback(port), loop: loop)
      defer { news.abort() }
      news.subscribe("news")
      let sports = try SubSocket.connect(to: try loopback(port), loop: loop)
      defer { sports.abort() }
      sports.subscribe("sports")

      // nngcat publishes every second, nanocat every 50 ms, until killed.
      #expect(try await nextMessage(news, within: .seconds(15)) == .message(message), "\(peer)")
      news.unsubscribe("news")
      // Messages that arrived before the unsubscription are still queued.
      var queued: [[UInt8]] = []
      while case .message(let m) = try news.tryReceive() { queued.append(m) }
      #expect(queued.allSatisfy { $0 == message })
      let filteredAtUnsubscribe = news.filteredMessages
      // Later messages still arrive on the connection but are filtered out.
      #expect(await waitUntil(.seconds(15)) { news.filteredMessages >= filteredAtUnsubscribe + 2 }, "\(peer)")
      #expect(await waitUntil(.seconds(15)) { sports.filteredMessages >= 2 }, "\(peer)")
      #expect(try news.tryReceive() == .wouldBlock)
      peer.terminate()
      // The peer is gone: both connections end, with nothing more delivered.
      #expect(try await nextMessage(news, within: .seconds(5)) == .endOfStream)
      #expect(try await nextMessage(sports, within: .seconds(5)) == .endOfStream)
    }
  }

  /// 5. An incompatible real peer (PUB) dialing our echo server while a
  /// REQ client uses it.
  static func incompatiblePeerAgainstEchoServer(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      let good = try ReqSocket.connect(to: server.localAddress, loop: loop)
      defer { good.abort() }
      #expect(try await roundTrip(good, "before") == "before")
      let peer = try PeerProcess(
        tool, tool.dialingPublisher(dial: try url(server.localAddress), message: "not a request"))
      defer { peer.terminate() }
      switch tool {
      case .nngcat:
        // Its dial is synchronous and it exits by itself. Exit 0: it reached
        // our server and exchanged headers. Exit 1 with "Connection
        // shutdown": we closed while it negotiated (our header can be cut
        // off when the peer's arrives first, see the report). A refused
        // dial would say "Connection refused".
        let exit = await peer.finish(within: .seconds(5))
        #expect(!peer.killed, "\(peer)")
        #expect(
          exit == .code(0) || (exit == .code(1) && peer.standardError.contains("Connection shutdown")), "\(peer)")
      case .nanocat:
        // It reconnects every 100 ms; let it try for a second.
        #expect(await peer.waitForExit(within: .seconds(1)) == nil, "\(peer)")
      }
      #expect(try await roundTrip(good, "during") == "during")
      peer.terminate()
      // Its connections were closed; only the REQ client's remains.
      #expect(await waitUntil(.seconds(5)) { server.connectionCount == 1 }, "connections: \(server.connectionCount)")
      #expect(try await roundTrip(good, "after") == "after")
      #expect(server.requestsServed == 3)
      // The server says why it dropped the peer.
      let reasons = server.failures.recent.map(\.description)
      #expect(
        reasons.contains("protocol violation: incompatible SP peer: protocol 0x20 (PUB), rep needs 0x30 (REQ)"),
        "\(reasons)")
    }
  }

  /// 6. Our SUB connecting to their REP.
  static func ourSubscriberAgainstTheirReplier(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let (peer, port) = try await startListeningPeer(tool) { tool.replier(listen: $0, reply: "x") }
      defer { peer.terminate() }
      let sub = try SubSocket.connect(to: try loopback(port), loop: loop)
      defer { sub.abort() }
      sub.subscribe("")
      let fd = sub.fileDescriptor
      #expect(await waitUntil(.seconds(5)) { pollEvents(fd) & Int16(POLLERR) != 0 }, "\(peer)")
      // Readable too: a receive would not block, it reports the error.
      #expect(pollEvents(fd) & Int16(POLLIN) != 0)
      do throws(SocketError) {
        let result = try sub.tryReceive()
        Issue.record("expected a protocol violation, got \(result)")
      } catch {
        if case .protocolViolation(let what) = error {
          #expect(what.contains("0x31"), "\(what)")
        } else {
          Issue.record("expected a protocol violation, got \(error)")
        }
      }
      // Receiving the error clears POLLERR; the connection is over.
      #expect(pollEvents(fd) & Int16(POLLERR) == 0)
      #expect(try sub.tryReceive() == .endOfStream)
      #expect(!peer.hasExited, "\(peer)")
      #expect(peer.quotedMessages.isEmpty, "\(peer)")
    }
  }

  /// A fresh ipc:// path in /tmp.
  static func ipcPath(_ tool: PeerTool) -> String {
    let path = "/tmp/userproto-ipc-\(getpid())-\(tool)-\(UInt32.random(in: 0...UInt32.max)).sock"
    unlink(path)
    return path
  }

  /// 7. Their REQ over ipc:// against our echo server.
  static func theirRequestOverIPC(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let path = ipcPath(tool)
      let server = try EchoServer(on: try SPAddress.parse("ipc://" + path), loop: loop)
      defer { server.close() }
      let body = "\(tool) over ipc on \(backend)"
      let peer = try PeerProcess(tool, tool.requester(dial: "ipc://" + path, body: body, seconds: 5))
      #expect(await peer.finish(within: .seconds(10)) == .code(0), "\(peer)")
      #expect(peer.quotedMessages == [body], "\(peer)")
      #expect(server.requestsServed == 1)
      #expect(server.failures.count == 0, "\(server.failures.recent)")
    }
  }

  /// 8. Our REQ over ipc:// against their REP.
  static func ourRequestOverIPC(_ tool: PeerTool, _ backend: EventLoop.BackendChoice) async throws {
    try tool.require()
    try await withLoop(backend) { loop in
      let path = ipcPath(tool)
      defer { unlink(path) }
      let peer = try PeerProcess(tool, tool.replier(listen: "ipc://" + path, reply: "world"))
      defer { peer.terminate() }
      #expect(await waitUntil(.seconds(5)) { acceptsConnections(path) || peer.hasExited }, "\(peer)")
      let socket = try ReqSocket.dial(try SPAddress.parse("ipc://" + path), loop: loop)
      defer { socket.abort() }
      #expect(socket.framing == .ipc)
      let request = "hello over ipc from \(backend)"
      #expect(try await roundTrip(socket, request) == "world", "\(peer)")
      #expect(await waitUntil(.seconds(5)) { peer.quotedMessages == [request] }, "\(peer)")
    }
  }

  /// True when a Unix-domain socket listens on `path` (from /proc/net/unix;
  /// nothing connects: nngcat 1.5's IPC listener stops answering after a
  /// probe connection that closes at once).
  static func acceptsConnections(_ path: String) -> Bool {
    let table = String(decoding: readWholeFile("/proc/net/unix"), as: UTF8.self)
    return table.split(separator: "\n").dropFirst().contains { line in
      let fields = line.split(separator: " ")
      // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening.
      return fields.count >= 8 && fields[3] == "00010000" && fields[7] == path
    }
  }
}
