import ExampleProtocols
import Glibc
import Synchronization
import TestSupport
import Testing
import UserProto

/// Raw mode (the SP header handed to the application and taken from it)
/// and SPDevice, NNG's nng_device: what raw REP, REQ and SUB deliver and
/// send, request/reply and survey brokers, the backtrace growing one word
/// per hop, the TTL over a chain of devices, a BUS reflector.
@Suite("SP raw mode and devices", .timeLimit(.minutes(2)), .testThreads)
struct SPRawDeviceTests {
  // MARK: Raw sockets

  @Test("raw REP delivers the request's backtrace behind the receiving pipe's id; a send with that header answers it")
  func rawRepHeader() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(RawRep0Handler(ttl: 3), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try Self.loopbackTarget(rep.listen("tcp://127.0.0.1:0")))
      try raw.send(spHeader(0x30) + spRequest(id: 0x8000_0042, utf8("hello")))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x31))

      let request = try #require(try await Self.nextRawMessage(rep, .rep0))
      #expect(request.body == utf8("hello"))
      let words = request.headerWords
      #expect(words.count == 2, "\(words)")
      let pipeID = words.first ?? 0
      #expect(pipeID != 0 && pipeID & 0x8000_0000 == 0, "a pipe id has its high bit clear: \(pipeID)")
      #expect(words.last == 0x8000_0042)
      // The id names the pipe the request came on.
      let named = try await rep.withHandler { h, _ in h.pipe(headerID: pipeID).flatMap { h.headerID(of: $0) } }
      #expect(named == pipeID)
      try await rep.send(SPMessage(header: request.header, body: utf8("world")).bytes)
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(0x8000_0042) + utf8("world"))

      // A request that came through a device: its hop word is kept, behind our pipe id.
      let hopped = spWord(0x0000_0007) + spWord(0x8000_0043) + utf8("via a device")
      try raw.send(spLength(UInt64(hopped.count)) + hopped)
      let second = try #require(try await Self.nextRawMessage(rep, .rep0))
      #expect(second.headerWords == [pipeID, 0x0000_0007, 0x8000_0043])
      #expect(second.body == utf8("via a device"))
      try await rep.send(SPMessage(header: second.header, body: utf8("back")).bytes)
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(0x0000_0007) + spWord(0x8000_0043) + utf8("back"))

      // Over the TTL (3 words here): dropped and counted, the pipe stays.
      let deep = spWord(1) + spWord(2) + spWord(3) + spWord(0x8000_0044) + utf8("too deep")
      try raw.send(spLength(UInt64(deep.count)) + deep)
      #expect(
        await waitUntilAsync(.seconds(5)) { (try? await rep.withHandler { h, _ in h.statistics.overTTL }) == 1 })
      #expect(try rep.tryReceive() == .wouldBlock)
      #expect(rep.pipeCount == 1 && rep.statistics.pipeFailures == 0)

      // A send too short for the pipe id is refused at the call.
      do {
        _ = try rep.trySend([0, 0, 1])
        Issue.record("a raw REP send without its pipe id was accepted")
      } catch {
        #expect(Self.isProtocolViolation(error), "\(error)")
      }
      let stats = try await rep.withHandler { h, _ in h.statistics }
      #expect(stats.delivered == 2 && stats.copiesSent == 2 && stats.overTTL == 1, "\(stats)")
      #expect(stats.unroutable == 0 && stats.malformedSends == 0, "\(stats)")
    }
  }

  @Test("raw REP routes each reply to the requester its pipe id names, in any order; a gone one's is counted")
  func rawRepRoutesReplies() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(RawRep0Handler(), loop: loop)
      let reqs = try (0..<2).map { _ in try Socket(Req0Handler(), loop: loop) }
      defer {
        for req in reqs { req.abort() }
        rep.abort()
      }
      let url = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      for req in reqs { try req.dial(url) }
      for (i, req) in reqs.enumerated() { try await req.send(utf8("question \(i)")) }
      var requests: [SPMessage] = []
      for _ in reqs {
        requests.append(try #require(try await Self.nextRawMessage(rep, .rep0)))
      }
      let pipeIDs = requests.map { $0.headerWords.first ?? 0 }
      #expect(Set(pipeIDs).count == 2, "\(pipeIDs)")

      // Answered in the opposite order they came in.
      for request in requests.reversed() {
        try await rep.send(SPMessage(header: request.header, body: utf8("answer to ") + request.body).bytes)
      }
      for (i, req) in reqs.enumerated() {
        #expect(string(try await nextSPMessage(req)) == "answer to question \(i)")
        let stats = try await req.withHandler { h, _ in h.statistics }
        #expect(stats.repliesDelivered == 1 && stats.ignoredReplies == 0, "\(stats)")
      }

      // A reply to a requester that has gone is dropped and counted.
      let first = try #require(requests.first(where: { String(decoding: $0.body, as: UTF8.self) == "question 0" }))
      reqs[0].abort()
      #expect(await waitUntil(.seconds(5)) { rep.pipeCount == 1 })
      try await rep.send(SPMessage(header: first.header, body: utf8("too late")).bytes)
      #expect(
        await waitUntilAsync(.seconds(5)) { (try? await rep.withHandler { h, _ in h.statistics.unroutable }) == 1 })
      let stats = try await rep.withHandler { h, _ in h.statistics }
      #expect(stats.delivered == 2 && stats.copiesSent == 2 && stats.drops == 0, "\(stats)")
    }
  }

  @Test("raw REQ sends requests as given, keeps several in flight, and delivers every reply with its backtrace")
  func rawReqPassesHeaders() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      let req = try Socket(RawReq0Handler(), loop: loop)
      defer {
        req.abort()
        rep.abort()
      }
      let control = ServerControl("rep")
      serve(rep, control)
      try req.dial(try dialURL(try rep.listen("tcp://127.0.0.1:0")))
      // Ids we chose (no id is added), all sent before any reply is read
      // (no send abandons an earlier one), the last behind a hop word.
      let headers = [spWord(0x8000_0001), spWord(0x8000_0002), spWord(0x0000_0009) + spWord(0x8000_0003)]
      for (i, header) in headers.enumerated() { try await req.send(header + utf8("r\(i)")) }
      var replies: [SPMessage] = []
      for _ in headers {
        replies.append(try #require(try await Self.nextRawMessage(req, .req0)))
      }
      // One pipe, one REP answering in order: the replies come in order.
      #expect(replies.map(\.header) == headers)
      #expect(replies.map { String(decoding: $0.body, as: UTF8.self) } == ["rep: r0", "rep: r1", "rep: r2"])
      #expect(control.served.load(ordering: .relaxed) == 3)
      let stats = try await req.withHandler { h, _ in h.statistics }
      #expect(stats.delivered == 3 && stats.copiesSent == 3 && stats.malformedMessages == 0, "\(stats)")
      #expect(req.statistics.staleDrops == 0)
    }
  }

  @Test("raw SUB delivers every message, with no subscription at all, and sends nothing")
  func rawSubUnfiltered() async throws {
    try await withSPLoop { loop in
      let pub = try Socket(Pub0Handler(), loop: loop)
      let sub = try Socket(RawSub0Handler(), loop: loop)
      defer {
        sub.abort()
        pub.abort()
      }
      try sub.dial(try dialURL(try pub.listen("tcp://127.0.0.1:0")))
      #expect(
        await waitUntilAsync(.seconds(10)) { (try? await pub.withHandler { h, _ in h.pipes.ready.count }) == 1 })
      let messages = ["news: a", "sports: b", "", "weather: c"]
      for message in messages { try await pub.send(utf8(message)) }
      for message in messages { #expect(string(try await nextSPMessage(sub)) == message) }
      let stats = try await sub.withHandler { h, _ in h.statistics }
      #expect(stats.delivered == messages.count, "\(stats)")
      do {
        _ = try sub.trySend(utf8("SUB does not send"))
        Issue.record("a raw SUB socket took a send")
      } catch {
        #expect((error as? SocketError) == .notSupported("this socket type does not send messages"), "\(error)")
      }
    }
  }

  // MARK: Devices

  @Test("two REQ clients, a device (raw REP front, raw REQ back), a REP: every reply reaches its own requester")
  func requestReplyBroker() async throws {
    try await withSPLoop { loop in
      let server = try Socket(Rep0Handler(), loop: loop)
      let front = try Socket(RawRep0Handler(), loop: loop)
      let back = try Socket(RawReq0Handler(), loop: loop)
      let clients = try (0..<2).map { _ in try Socket(Req0Handler(), loop: loop) }
      defer {
        for client in clients { client.abort() }
        front.abort()
        back.abort()
        server.abort()
      }
      let control = ServerControl("rep")
      serve(server, control)
      try back.dial(try dialURL(try server.listen("tcp://127.0.0.1:0")))
      let frontURL = try dialURL(try front.listen("tcp://127.0.0.1:0"))
      for client in clients { try client.dial(frontURL) }
      let device = try SPDevice(front, back)
      #expect(device.forwardsFrontToBack && device.forwardsBackToFront && !device.isReflector)
      let running = Task { try await device.run() }

      let rounds = 50
      try await withThrowingTaskGroup(of: Void.self) { group in
        for (n, client) in clients.enumerated() {
          group.addTask {
            for i in 0..<rounds {
              let body = "client \(n) request \(i)"
              let reply = try await request(client, body)
              #expect(reply == "rep: \(body)")
            }
          }
        }
        try await group.waitForAll()
      }
      for client in clients {
        let stats = try await client.withHandler { h, _ in h.statistics }
        #expect(stats.repliesDelivered == rounds && stats.ignoredReplies == 0 && stats.timedResends == 0, "\(stats)")
      }
      #expect(control.served.load(ordering: .relaxed) == 2 * rounds)
      // The device counts a message once the other socket took it, which
      // can be just after the reply reached its client.
      #expect(await waitUntil(.seconds(5)) { device.statistics.backToFront == 2 * rounds }, "\(device.statistics)")
      #expect(device.statistics.frontToBack == 2 * rounds && device.statistics.refused == 0, "\(device.statistics)")
      let frontStats = try await front.withHandler { h, _ in h.statistics }
      #expect(frontStats.delivered == 2 * rounds && frontStats.copiesSent == 2 * rounds, "\(frontStats)")
      #expect(frontStats.unroutable == 0 && frontStats.drops == 0, "\(frontStats)")

      device.stop()
      try await running.value
      // Stopping leaves the sockets to their owner.
      #expect(!front.isClosed && !back.isClosed && front.pipeCount == 2)
    }
  }

  @Test("each device hop adds one word to the request's backtrace, and the reply retraces it")
  func hopsGrowTheBacktrace() async throws {
    try await withSPLoop { loop in
      let serverURL = Self.inprocURL("hops-server")
      let rep = try Socket(RawRep0Handler(), loop: loop)  // raw, to see the backtrace
      defer { rep.abort() }
      try rep.listen(serverURL)
      let chain = try Self.chain(2, to: serverURL, ttl: 8, loop: loop, tag: "hops")
      defer { Self.tearDown(chain) }
      let req = try Socket(Req0Handler(), loop: loop)
      defer { req.abort() }
      try req.dial(chain.url)
      try await req.send(utf8("deep"))

      let request = try #require(try await Self.nextRawMessage(rep, .rep0))
      #expect(request.body == utf8("deep"))
      // The REP's own pipe id, then one word per device (the one nearest
      // the REP first), then the request id.
      let words = request.headerWords
      #expect(words.count == 4, "\(words)")
      #expect(words.dropLast().allSatisfy { $0 & 0x8000_0000 == 0 }, "\(words)")
      #expect((words.last ?? 0) & 0x8000_0000 != 0, "\(words)")
      for (hop, device) in chain.devices.enumerated() {
        let id = try await device.front.withHandler { h, _ in h.pipes.ready.first.flatMap { h.headerID(of: $0) } }
        let expected = words.count == 4 ? words[1 + hop] : nil
        #expect(id != nil && id == expected, "device \(hop): \(String(describing: id)) in \(words)")
      }
      try await rep.send(SPMessage(header: request.header, body: utf8("back up")).bytes)
      #expect(string(try await nextSPMessage(req)) == "back up")
    }
  }

  @Test("as many devices as the TTL: the REP drops the request (counted), as NNG does; one fewer gets its reply")
  func ttlLimitsTheChain() async throws {
    try await withSPLoop { loop in
      let ttl = 3
      let serverURL = Self.inprocURL("ttl-server")
      let rep = try Socket(Rep0Handler(ttl: ttl), loop: loop)
      defer { rep.abort() }
      try rep.listen(serverURL)
      serve(rep, ServerControl("rep"))

      // ttl - 1 devices: the REP reads ttl words (one per device, and the id).
      let short = try Self.chain(ttl - 1, to: serverURL, ttl: ttl, loop: loop, tag: "short")
      defer { Self.tearDown(short) }
      let near = try Socket(Req0Handler(), loop: loop)
      defer { near.abort() }
      try near.dial(short.url)
      #expect(try await request(near, "within") == "rep: within")

      // ttl devices: ttl + 1 words, one too many. Every device passes it on
      // (each reads at most ttl words) and the REP drops it, keeping the pipe.
      let long = try Self.chain(ttl, to: serverURL, ttl: ttl, loop: loop, tag: "long")
      defer { Self.tearDown(long) }
      let far = try Socket(Req0Handler(), loop: loop)
      defer { far.abort() }
      try far.dial(long.url)
      try await far.send(utf8("beyond"))
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await rep.withHandler { h, _ in h.statistics.requestsOverTTL }) == 1
        })
      #expect(try far.tryReceive() == .wouldBlock)  // dropped: no reply can come
      #expect(await waitUntil(.seconds(5)) { long.devices.allSatisfy { $0.statistics.frontToBack == 1 } })
      let served = try await rep.withHandler { h, _ in h.statistics }
      #expect(served.requestsDelivered == 1 && served.requestsOverTTL == 1, "\(served)")
      #expect(rep.statistics.pipeFailures == 0)

      // Devices whose own TTL is lower: the one nearest the REP reads ttl
      // words, over its ttl - 1, and drops the request itself.
      let strict = try Self.chain(ttl, to: serverURL, ttl: ttl - 1, loop: loop, tag: "strict")
      defer { Self.tearDown(strict) }
      let stopped = try Socket(Req0Handler(), loop: loop)
      defer { stopped.abort() }
      try stopped.dial(strict.url)
      try await stopped.send(utf8("stopped on the way"))
      let nearest = strict.devices[0].front
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await nearest.withHandler { h, _ in h.statistics.overTTL }) == 1
        })
      let after = try await rep.withHandler { h, _ in h.statistics }
      #expect(after.requestsDelivered == 1 && after.requestsOverTTL == 1, "\(after)")
    }
  }

  @Test("a SURVEYOR, a device (raw RESPONDENT front, raw SURVEYOR back), two RESPONDENTs: both answers come back")
  func surveyBroker() async throws {
    try await withSPLoop { loop in
      let surveyor = try Socket(Surveyor0Handler(surveyTime: .seconds(60)), loop: loop)
      let front = try Socket(RawRespondent0Handler(), loop: loop)
      let back = try Socket(RawSurveyor0Handler(), loop: loop)
      let respondents = try (0..<2).map { _ in try Socket(Respondent0Handler(), loop: loop) }
      defer {
        surveyor.abort()
        front.abort()
        back.abort()
        for respondent in respondents { respondent.abort() }
      }
      let backURL = try dialURL(try back.listen("tcp://127.0.0.1:0"))
      for respondent in respondents { try respondent.dial(backURL) }
      try surveyor.dial(try dialURL(try front.listen("tcp://127.0.0.1:0")))
      for (i, respondent) in respondents.enumerated() {
        Task {
          do {
            for try await survey in respondent.messages {
              try await respondent.send(utf8("respondent \(i): ") + survey)
            }
          } catch {}
        }
      }
      let device = try SPDevice(front, back)
      let running = Task { try await device.run() }
      // A survey reaches only the pipes that are up: wait for the whole path.
      #expect(
        await waitUntilAsync(.seconds(10)) {
          let out = (try? await back.withHandler { h, _ in h.pipes.ready.count }) ?? 0
          let source = (try? await surveyor.withHandler { h, _ in h.pipes.ready.count }) ?? 0
          return out == 2 && source == 1
        })

      try await surveyor.send(utf8("ping"))
      var answers: [String] = []
      for _ in respondents {
        if let answer = string(try await nextSPMessage(surveyor)) { answers.append(answer) }
      }
      #expect(answers.sorted() == ["respondent 0: ping", "respondent 1: ping"])
      let stats = try await surveyor.withHandler { h, _ in h.statistics }
      #expect(stats.answersDelivered == 2 && stats.lateAnswers == 0, "\(stats)")
      #expect(await waitUntil(.seconds(5)) { device.statistics.backToFront == 2 }, "\(device.statistics)")
      #expect(device.statistics.frontToBack == 1)
      device.stop()
      try await running.value
    }
  }

  @Test("a raw BUS reflector makes a star a bus: a leaf's message reaches every other leaf and never itself")
  func busReflector() async throws {
    try await withSPLoop { loop in
      let hub = try Socket(RawBus0Handler(), loop: loop)
      let leaves = try (0..<3).map { _ in try Socket(Bus0Handler(), loop: loop) }
      defer {
        for leaf in leaves { leaf.abort() }
        hub.abort()
      }
      let url = try dialURL(try hub.listen("tcp://127.0.0.1:0"))
      for leaf in leaves { try leaf.dial(url) }
      #expect(
        await waitUntilAsync(.seconds(10)) {
          guard (try? await hub.withHandler { h, _ in h.pipes.ready.count }) == 3 else { return false }
          for leaf in leaves {
            if (try? await leaf.withHandler { h, _ in h.pipes.ready.count }) != 1 { return false }
          }
          return true
        })
      let device = try SPDevice(reflecting: hub)
      #expect(device.isReflector && device.forwardsFrontToBack && !device.forwardsBackToFront)
      let running = Task { try await device.run() }

      try await leaves[0].send(utf8("from 0"))
      #expect(string(try await nextSPMessage(leaves[1])) == "from 0")
      #expect(string(try await nextSPMessage(leaves[2])) == "from 0")
      try await leaves[1].send(utf8("from 1"))
      // The hub forwards in order: had leaf 0's message come back to it, it
      // would be there before leaf 1's.
      #expect(string(try await nextSPMessage(leaves[0])) == "from 1")
      #expect(string(try await nextSPMessage(leaves[2])) == "from 1")
      #expect(await waitUntil(.seconds(5)) { device.statistics.frontToBack == 2 }, "\(device.statistics)")
      let stats = try await hub.withHandler { h, _ in h.statistics }
      #expect(stats.delivered == 2 && stats.copiesSent == 4 && stats.drops == 0, "\(stats)")
      device.stop()
      try await running.value
    }
  }

  @Test("a device refuses protocols that are not peers, and a reflector over one that is not its own peer")
  func refusesMismatches() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(RawRep0Handler(), loop: loop)
      let pub = try Socket(RawPub0Handler(), loop: loop)
      defer {
        rep.abort()
        pub.abort()
      }
      do {
        _ = try SPDevice(rep, pub)
        Issue.record("a REP and a PUB were joined")
      } catch {
        #expect(Self.isNotSupported(error), "\(error)")
      }
      do {
        _ = try SPDevice(reflecting: rep)
        Issue.record("a REP reflector was made")
      } catch {
        #expect(Self.isNotSupported(error), "\(error)")
      }
    }
  }

  @Test("run() returns once a socket closes; a second run() is refused, and stop() before run() makes it return")
  func runEndsWithItsSockets() async throws {
    try await withSPLoop { loop in
      let front = try Socket(RawRep0Handler(), loop: loop)
      let back = try Socket(RawReq0Handler(), loop: loop)
      defer {
        front.abort()
        back.abort()
      }
      let device = try SPDevice(front, back)
      let running = Task { try await device.run() }
      // Whether or not run() has started when the socket closes, it ends.
      front.abort()
      try await running.value
      do {
        try await device.run()
        Issue.record("a device ran twice")
      } catch {
        #expect(Self.isNotSupported(error), "\(error)")
      }

      let other = try SPDevice(try Socket(RawPull0Handler(), loop: loop), try Socket(RawPush0Handler(), loop: loop))
      defer {
        other.front.abort()
        other.back.abort()
      }
      #expect(other.forwardsFrontToBack && !other.forwardsBackToFront)
      other.stop()
      try await other.run()  // returns at once
      let stats = other.statistics
      #expect(stats.frontToBack == 0 && stats.backToFront == 0 && stats.refused == 0, "\(stats)")
    }
  }

  // MARK: Helpers

  /// A row of devices, the first one's back dialing the server.
  struct Chain {
    /// The last device's front: where a requester dials.
    let url: String
    /// Nearest the server first.
    let devices: [SPDevice<SPRaw.Rep0, SPRaw.Req0>]
    let runs: [Task<Void, any Error>]
  }

  /// `count` devices in a row over inproc:// (each a raw REP front with
  /// `ttl` and a raw REQ back), running.
  static func chain(_ count: Int, to serverURL: String, ttl: Int, loop: EventLoop, tag: String) throws -> Chain {
    var url = serverURL
    var devices: [SPDevice<SPRaw.Rep0, SPRaw.Req0>] = []
    for hop in 0..<count {
      let front = try Socket(RawRep0Handler(ttl: ttl), loop: loop)
      let back = try Socket(RawReq0Handler(), loop: loop)
      try back.dial(url)
      url = inprocURL("\(tag)-\(hop)")
      try front.listen(url)
      devices.append(try SPDevice(front, back))
    }
    let runs = devices.map { device in Task { try await device.run() } }
    return Chain(url: url, devices: devices, runs: runs)
  }

  /// The next message of a raw socket, split as `protocolID` says (nil if
  /// none came in time, or it does not start with a whole header).
  static func nextRawMessage<H: SocketHandler>(_ socket: Socket<H>, _ protocolID: SPProtocolID) async throws
    -> SPMessage?
  {
    guard let bytes = try await nextSPMessage(socket) else { return nil }
    return SPMessage(bytes, for: protocolID)
  }

  static func tearDown(_ chain: Chain) {
    for device in chain.devices {
      device.stop()
      device.front.abort()
      device.back.abort()
    }
  }

  static func inprocURL(_ tag: String) -> String {
    "inproc://sp-raw-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
  }

  static func loopbackTarget(_ bound: TransportURL) throws -> SocketAddress {
    guard case .tcp(let address) = bound, let port = address.port else {
      throw InteropFailure("listen gave \(bound), not a tcp:// address with a port")
    }
    return try loopback(port)
  }

  static func isProtocolViolation(_ error: any Error) -> Bool {
    if case .protocolViolation? = error as? SocketError { return true }
    return false
  }

  static func isNotSupported(_ error: any Error) -> Bool {
    if case .notSupported? = error as? SocketError { return true }
    return false
  }
}

@Suite(
  "SP device interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPRawDeviceNNGTests {
  @Test("nngcat --req0, our device (raw REP front, raw REQ back), nngcat --rep0, over tcp://")
  func nngcatThroughOurDevice() async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let (server, port) = try await startListeningPeer(.nngcat) {
        ["--rep0", "--listen", $0, "--data", "world", "-Q", "--count", "1"]
      }
      defer { server.terminate() }
      let front = try Socket(RawRep0Handler(), loop: loop)
      let back = try Socket(RawReq0Handler(), loop: loop)
      defer {
        front.abort()
        back.abort()
      }
      try back.dial("tcp://127.0.0.1:\(port)")
      let frontURL = try dialURL(try front.listen("tcp://127.0.0.1:0"))
      let device = try SPDevice(front, back)
      let running = Task { try await device.run() }

      let body = "hello through our device"
      // Generous: a loaded test run can hold our device's task off for seconds.
      let client = try PeerProcess(
        .nngcat, ["--req0", "--dial", frontURL, "--data", body, "-Q", "--recv-timeout", "30"])
      defer { client.terminate() }
      #expect(await client.finish(within: .seconds(40)) == .code(0), "\(client)")
      #expect(client.quotedMessages == ["world"], "\(client)")
      #expect(await waitUntil(.seconds(5)) { server.quotedMessages == [body] }, "\(server)")
      #expect(await server.finish(within: .seconds(10)) == .code(0), "\(server)")
      #expect(await waitUntil(.seconds(5)) { device.statistics.backToFront == 1 }, "\(device.statistics)")
      #expect(device.statistics.frontToBack == 1 && device.statistics.refused == 0, "\(device.statistics)")
      device.stop()
      try await running.value
    }
  }
}
