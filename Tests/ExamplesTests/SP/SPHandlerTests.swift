import ExampleProtocols
import Glibc
import Synchronization
import TestSupport
import Testing
import UserProto

@Suite("SP REQ/REP and PUB/SUB handlers on pipe sockets", .timeLimit(.minutes(2)), .testThreads)
struct SPHandlerTests {
  enum Kind: String, CaseIterable, Sendable { case tcp, ipc, inproc }

  @Test("REQ/REP between our sockets: each request gets its own reply", arguments: Kind.allCases)
  func requestReply(kind: Kind) async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      let req = try Socket(Req0Handler(), loop: loop)
      defer {
        req.abort()
        rep.abort()
      }
      let url: String
      switch kind {
      case .tcp: url = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      case .ipc:
        let path = freshIPCPath("reqrep")
        try rep.listen("ipc://" + path)
        url = "ipc://" + path
      case .inproc:
        url = "inproc://sp-reqrep-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try rep.listen(url)
      }
      let control = ServerControl("rep")
      serve(rep, control)
      try req.dial(url)
      for i in 0..<20 {
        let body = "request \(i) over \(kind)"
        #expect(try await request(req, body) == "rep: \(body)")
      }
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.requestsSent == 20 && stats.repliesDelivered == 20 && stats.ignoredReplies == 0)
      #expect(stats.timedResends == 0 && stats.pipeLossResends == 0)
      let served = try await rep.withHandler { h, _ in h.statistics }
      #expect(served.requestsDelivered == 20 && served.repliesSent == 20 && served.repliesWithoutRequest == 0)
    }
  }

  @Test("one REQ dialing three REPs spreads requests; a REP aborted mid-run costs no reply and duplicates none")
  func spreadAndFailover() async throws {
    try await withSPLoop { loop in
      let reps = try (0..<3).map { _ in try Socket(Rep0Handler(), loop: loop) }
      let controls = (0..<3).map { ServerControl("rep\($0)") }
      let req = try Socket(Req0Handler(), loop: loop)  // resend time 60 s: only pipe loss resends
      defer {
        req.abort()
        for rep in reps { rep.abort() }
      }
      for (rep, control) in zip(reps, controls) {
        try req.dial(try dialURL(try rep.listen("tcp://127.0.0.1:0")))
        serve(rep, control)
      }
      #expect(await waitUntilAsync(.seconds(10)) { await readyPipes(req) == 3 })

      var replies: [String] = []
      for i in 0..<30 {
        let body = "spread \(i)"
        let reply = try #require(try await request(req, body), "request \(i) got no reply")
        #expect(reply.hasSuffix(": \(body)"))
        replies.append(reply)
      }
      for control in controls {
        // Round robin over three writable pipes: ten each.
        #expect(control.served.load(ordering: .relaxed) == 10, "\(control.name)")
      }

      // rep1 now swallows requests; once one is in flight there, it is
      // aborted: the request must come back from another REP at once (the
      // resend time is a minute away).
      controls[1].stalled.store(true, ordering: .relaxed)
      var aborted = false
      for i in 30..<60 {
        let body = "failover \(i)"
        try await req.send(utf8(body))
        var reply: [UInt8]?
        _ = try await waitUntil(.seconds(10), every: .milliseconds(2)) {
          if !aborted && controls[1].swallowed.load(ordering: .relaxed) > 0 {
            reps[1].abort()
            aborted = true
          }
          if case .message(let m) = try req.tryReceive() { reply = m }
          return reply != nil
        }
        let text = try #require(string(reply), "request \(i) got no reply")
        #expect(text.hasSuffix(": \(body)"))
        #expect(!text.hasPrefix("rep1"))
      }
      #expect(aborted)
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.pipeLossResends >= 1)
      #expect(stats.timedResends == 0)
      #expect(stats.repliesDelivered == 60)
      // Nothing more reaches the application.
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try req.tryReceive() == .wouldBlock)
      #expect(
        controls[0].served.load(ordering: .relaxed) + controls[2].served.load(ordering: .relaxed)
          == 60 - controls[1].served.load(ordering: .relaxed))
    }
  }

  @Test("a reply that comes after its request was resent elsewhere is dropped, not delivered twice")
  func lateDuplicateDropped() async throws {
    try await withSPLoop { loop in
      let slow = try Socket(Rep0Handler(), loop: loop)
      let fast = try Socket(Rep0Handler(), loop: loop)
      let req = try Socket(Req0Handler(resendInterval: .milliseconds(150)), loop: loop)
      defer {
        req.abort()
        slow.abort()
        fast.abort()
      }
      // The slow one answers after 600 ms; by then the request went to the other too.
      let slowURL = try dialURL(try slow.listen("tcp://127.0.0.1:0"))
      Task {
        do {
          for try await request in slow.messages {
            try await Task.sleep(for: .milliseconds(600))
            try await slow.send(utf8("slow: ") + request)
          }
        } catch {}
      }
      let fastControl = ServerControl("fast")
      let fastURL = try dialURL(try fast.listen("tcp://127.0.0.1:0"))
      try req.dial(slowURL)
      #expect(await waitUntilAsync(.seconds(10)) { await readyPipes(req) == 1 })
      try req.dial(fastURL)
      #expect(await waitUntilAsync(.seconds(10)) { await readyPipes(req) == 2 })
      // The first request goes to the slow REP (round robin starts there).
      try await req.send(utf8("once"))
      // The fast REP starts answering only now: the resend reaches it.
      serve(fast, fastControl)
      let reply = try #require(string(try await nextSPMessage(req)))
      #expect(reply == "fast: once" || reply == "slow: once")
      // Wait for the other answer to arrive and be dropped.
      #expect(
        await waitUntilAsync(.seconds(5)) {
          (try? await req.withHandler { h, _ in h.statistics.ignoredReplies }) ?? 0 >= 1
        })
      #expect(try req.tryReceive() == .wouldBlock)
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.timedResends >= 1 && stats.repliesDelivered == 1)
    }
  }

  @Test("a REP serving three REQ clients at once routes each reply to its requester")
  func repRoutesReplies() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let url = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      serve(rep, ServerControl("rep"))
      let clients = try (0..<3).map { _ in try Socket(Req0Handler(), loop: loop) }
      defer { for c in clients { c.abort() } }
      for c in clients { try c.dial(url) }
      try await withThrowingTaskGroup(of: Int.self) { group in
        for (n, client) in clients.enumerated() {
          group.addTask {
            var good = 0
            for k in 0..<15 {
              let body = "client \(n) request \(k)"
              // A misrouted reply never comes: stop at the first one missing.
              guard try await request(client, body, within: .seconds(20)) == "rep: \(body)" else { break }
              good += 1
            }
            return good
          }
        }
        for try await good in group { #expect(good == 15) }
      }
      let stats = try await rep.withHandler { h, _ in h.statistics }
      #expect(stats.requestsDelivered == 45 && stats.repliesSent == 45)
      #expect(stats.repliesToVanishedPeers == 0 && stats.repliesWithoutRequest == 0)
    }
  }

  @Test("a reply sent with no request to answer is dropped and counted")
  func replyWithoutRequest() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      #expect(try rep.trySend(utf8("unsolicited")))
      #expect(
        await waitUntilAsync(.seconds(5)) {
          (try? await rep.withHandler { h, _ in h.statistics.repliesWithoutRequest }) == 1
        })
      #expect(rep.statistics.messagesSent == 1)
    }
  }

  @Test("bad peers fail only their own pipe; the REP keeps serving its good client", arguments: interopBackends)
  func badPeers(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let rep = try Socket(Rep0Handler(headerTimeout: .milliseconds(300)), loop: loop)
      defer { rep.abort() }
      let bound = try rep.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let target = try loopback(try #require(address.port))
      serve(rep, ServerControl("rep"))
      let good = try Socket(Req0Handler(), loop: loop)
      defer { good.abort() }
      try good.dial(try dialURL(bound))
      #expect(try await request(good, "before") == "rep: before")

      func failures() async -> [String] { (try? await rep.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      /// Plays `bytes` (then half-closes if asked), and expects our side to
      /// drop the connection with a failure saying `reason`.
      func expectFailure(_ what: String, _ bytes: [UInt8], finish: Bool = false, _ reason: String) async throws {
        let raw = try RawClient(connectingTo: target)
        try raw.send(bytes)
        if finish { raw.shutdownWrite() }
        let end = await raw.waitForClose(within: .seconds(10))
        #expect(end.closure != nil, "\(what): our side kept the connection")
        // What came back is our header (at most), never a message.
        #expect(end.bytes.count <= 8, "\(what): \(end.bytes)")
        let seen = await waitUntilAsync(.seconds(5)) { await failures().contains { $0.contains(reason) } }
        let reasons = await failures()
        #expect(seen, "\(what): \(reasons)")
        #expect(try await request(good, "after \(what)") == "rep: after \(what)")
      }

      try await expectFailure(
        "wrong protocol", spHeader(0x20) + spRequest(id: 0x8000_0001, utf8("x")),
        "incompatible SP peer: protocol 0x20 (PUB), rep needs 0x30 (REQ)")
      try await expectFailure(
        "bad magic", [0x00, 0x53, 0x51, 0x00, 0x00, 0x30, 0x00, 0x00], "not an SP peer: header 00 53 51 00 00 30 00 00")
      try await expectFailure(
        "reserved bytes", [0x00, 0x53, 0x50, 0x00, 0x00, 0x30, 0x00, 0x01], "non-zero reserved bytes")
      try await expectFailure(
        "truncated frame", spHeader(0x30) + spLength(100) + [UInt8](repeating: 7, count: 10), finish: true,
        "the peer closed mid-frame after 18 of 108 bytes")
      try await expectFailure(
        "oversize frame", spHeader(0x30) + spLength(2 << 20),
        "message of 2097152 bytes exceeds the limit of 1048576 bytes")
      try await expectFailure(
        "no request id", spHeader(0x30) + spLength(8) + spWord(1) + spWord(2),
        "whose backtrace has no request id")
      try await expectFailure("silent peer", [], "no SP header from the peer within")
      let stats = rep.statistics
      #expect(stats.pipeFailures >= 7)
      #expect(try await request(good, "last") == "rep: last")
    }
  }

  @Test("a request with more hops than the TTL is dropped; the pipe stays and is answered after")
  func ttl() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let bound = try rep.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      serve(rep, ServerControl("rep"))
      let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try raw.send(spHeader(0x30))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x31))
      // 8 words (7 hops and the id) are accepted; 9 are not.
      let eight = (1...7).flatMap { spWord(UInt32($0)) } + spWord(0x8000_0008) + utf8("eight")
      let nine = (1...8).flatMap { spWord(UInt32($0)) } + spWord(0x8000_0009) + utf8("nine")
      try raw.send(spLength(UInt64(nine.count)) + nine)
      try raw.send(spLength(UInt64(eight.count)) + eight)
      let reply = try #require(await raw.readFrame(within: .seconds(5)))
      #expect(reply == Array(eight.prefix(32)) + utf8("rep: eight"))
      let stats = try await rep.withHandler { h, _ in h.statistics }
      #expect(stats.requestsOverTTL == 1 && stats.requestsDelivered == 1)
      #expect(rep.statistics.pipeFailures == 0)
    }
  }

  @Test("PUB/SUB between our sockets: prefix subscriptions changed at run time")
  func pubSub() async throws {
    try await withSPLoop { loop in
      let pub = try Socket(Pub0Handler(), loop: loop)
      let news = try Socket(Sub0Handler(subscriptions: [utf8("news")]), loop: loop)
      let all = try Socket(Sub0Handler(), loop: loop)
      defer {
        pub.abort()
        news.abort()
        all.abort()
      }
      let url = try dialURL(try pub.listen("tcp://127.0.0.1:0"))
      try news.dial(url)
      let path = freshIPCPath("pubsub")
      try pub.listen("ipc://" + path)
      try all.dial("ipc://" + path)
      try await all.withHandler { h, _ in h.subscribe("") }
      #expect(await waitUntilAsync(.seconds(10)) { (try? await pub.withHandler { h, _ in h.pipes.ready.count }) == 2 })
      #expect(throws: SocketError.self) { try news.trySend(utf8("subscribers do not send")) }

      for text in ["news: 1", "sports: 1", "newsflash", "new"] { #expect(try pub.trySend(utf8(text))) }
      for text in ["news: 1", "sports: 1", "newsflash", "new"] { #expect(string(try await nextSPMessage(all)) == text) }
      #expect(string(try await nextSPMessage(news)) == "news: 1")
      #expect(string(try await nextSPMessage(news)) == "newsflash")
      #expect(
        await waitUntilAsync(.seconds(5)) { (try? await news.withHandler { h, _ in h.statistics.filtered }) == 2 })

      // Switch the subscription: only sports from now on.
      try await news.withHandler { h, _ in
        h.unsubscribe("news")
        h.subscribe("sports")
      }
      for text in ["news: 2", "sports: 2"] { #expect(try pub.trySend(utf8(text))) }
      #expect(string(try await nextSPMessage(news)) == "sports: 2")
      #expect(string(try await nextSPMessage(all)) == "news: 2")
      #expect(string(try await nextSPMessage(all)) == "sports: 2")
      #expect(try news.tryReceive() == .wouldBlock)
      let stats = try await pub.withHandler { h, _ in h.statistics }
      #expect(stats.published == 6 && stats.delivered == 12 && stats.drops == 0)
    }
  }

  @Test("PUB drops (and counts) for a subscriber that stopped reading; the others get everything")
  func pubDrops() async throws {
    try await withSPLoop { loop in
      let pub = try Socket(Pub0Handler(), loop: loop, options: SocketOptions(sendHighWatermark: 128 * 1024))
      let sub = try Socket(Sub0Handler(subscriptions: [[]]), loop: loop)
      defer {
        pub.abort()
        sub.abort()
      }
      let bound = try pub.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      try sub.dial(try dialURL(bound))
      // A subscriber that sends its header and never reads.
      let stalled = try RawClient(connectingTo: try loopback(try #require(address.port)), receiveBuffer: 4096)
      try stalled.send(spHeader(0x21))
      #expect(await waitUntilAsync(.seconds(10)) { (try? await pub.withHandler { h, _ in h.pipes.ready.count }) == 2 })
      let payload = [UInt8](repeating: 0x61, count: 64 * 1024)
      var sent = 0
      var drops = 0
      while drops == 0 && sent < 2000 {
        #expect(try pub.trySend(spWord(UInt32(sent)) + payload))
        let got = try #require(try await nextSPMessage(sub), "message \(sent) did not reach the reading subscriber")
        #expect(Array(got.prefix(4)) == spWord(UInt32(sent)))
        sent += 1
        drops = try await pub.withHandler { h, _ in h.drops }
      }
      #expect(drops > 0, "no drop after \(sent) messages of 64 KiB")
      let stats = try await pub.withHandler { h, _ in h.statistics }
      #expect(stats.delivered + stats.drops == 2 * stats.published)
      #expect(pub.statistics.pipes == 2)
    }
  }
}

@Suite("SP REQ against bad REP peers", .timeLimit(.minutes(1)), .testThreads)
struct SPReqBadPeerTests {
  @Test(
    "a wrong protocol id, and a reply id without the high bit, fail only that pipe; the request is served elsewhere")
  func reqBadPeers() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      let req = try Socket(Req0Handler(), loop: loop)
      defer {
        req.abort()
        rep.abort()
      }
      let goodURL = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      serve(rep, ServerControl("good"))
      func failures() async -> [String] { (try? await req.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }

      // A PUB where a REP should be: never used, its pipe fails.
      let wrong = try RawListener()
      try req.dial(
        "tcp://127.0.0.1:\(try #require(wrong.address.port))", reconnect: ReconnectPolicy(minimum: .seconds(30)))
      let wrongPeer = try #require(await wrong.accept(within: .seconds(5)))
      try wrongPeer.send(spHeader(0x20))
      #expect(await wrongPeer.read(8, within: .seconds(5)).bytes == spHeader(0x30))
      #expect(await wrongPeer.waitForClose(within: .seconds(5)).closure != nil)
      let reasons = await failures()
      #expect(
        reasons.contains { $0.contains("incompatible SP peer: protocol 0x20 (PUB), req needs 0x31 (REP)") },
        "\(reasons)")

      // A REP that answers with an id lacking the high bit; it gets the
      // first request (the only ready pipe), fails, and the request goes
      // to the good REP as soon as it is up.
      let liar = try RawListener()
      try req.dial(
        "tcp://127.0.0.1:\(try #require(liar.address.port))", reconnect: ReconnectPolicy(minimum: .seconds(30)))
      let liarPeer = try #require(await liar.accept(within: .seconds(5)))
      try liarPeer.send(spHeader(0x31))
      #expect(await liarPeer.read(8, within: .seconds(5)).bytes == spHeader(0x30))
      try await req.send(utf8("question"))
      let frame = try #require(await liarPeer.readFrame(within: .seconds(5)))
      let (id, body) = try #require(splitRequest(frame))
      #expect(id & 0x8000_0000 != 0 && body == utf8("question"))
      try liarPeer.send(spLength(12) + spWord(id & 0x7fff_ffff) + utf8("lies!!!!"))
      #expect(await liarPeer.waitForClose(within: .seconds(5)).closure != nil)
      try req.dial(goodURL)
      #expect(string(try await nextSPMessage(req)) == "good: question")
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.pipeLossResends == 1 && stats.repliesDelivered == 1)
      let later = await failures()
      #expect(later.contains { $0.contains("lacks the high bit") }, "\(later)")
    }
  }

  @Test("over ipc://, a frame with a message type other than 1 fails the pipe")
  func ipcBadType() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let path = freshIPCPath("badtype")
      try rep.listen("ipc://" + path)
      let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      #expect(fd >= 0)
      let address = try SocketAddress(unixPath: path)
      #expect(address.withSockaddr { connect(fd, $0, $1) } == 0)
      let raw = RawClient(adopting: fd)
      try raw.send(spHeader(0x30) + [0x02] + spLength(4) + spWord(0x8000_0001))
      #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
      let reasons = (try? await rep.withHandler { h, _ in h.pipes.recentFailures }) ?? []
      #expect(reasons.contains { $0.contains("SP/IPC message type 2, expected 1") }, "\(reasons)")
    }
  }
}
