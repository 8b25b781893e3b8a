import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

@Suite("SP SURVEYOR/RESPONDENT and BUS handlers on pipe sockets", .timeLimit(.minutes(2)), .testThreads)
struct SPSurveyBusTests {
  enum Kind: String, CaseIterable, Sendable { case tcp, ipc, inproc }

  @Test("SURVEYOR to five RESPONDENTs, one slow past the survey time: four answers delivered, one counted late")
  func fiveRespondents() async throws {
    try await withSPLoop { loop in
      let surveyTime = Duration.seconds(2)
      let surveyor = try Socket(Surveyor0Handler(surveyTime: surveyTime), loop: loop)
      let respondents = try (0..<5).map { _ in try Socket(Respondent0Handler(), loop: loop) }
      defer {
        surveyor.abort()
        for respondent in respondents { respondent.abort() }
      }
      let fd = surveyor.fileDescriptor
      let url = try dialURL(try surveyor.listen("tcp://127.0.0.1:0"))
      var tasks: [Task<Void, Never>] = []
      defer { for task in tasks { task.cancel() } }
      for (n, respondent) in respondents.enumerated() {
        try respondent.dial(url)
        // The last one answers a second after the survey time.
        tasks.append(answerSurveys(respondent, name: "r\(n)", delay: n == 4 ? .seconds(3) : .zero))
      }
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 5 })
      // No survey yet: nothing to receive, and the fd is not readable.
      #expect(try surveyor.tryReceive() == .wouldBlock)
      #expect(pollEvents(fd) & Int16(POLLIN) == 0)

      try await surveyor.send(utf8("roll call"))
      var answers: [String] = []
      // Read at once: the answers go when the survey ends.
      _ = try await waitUntil(surveyTime, every: .milliseconds(2)) {
        try takeQueued(surveyor, into: &answers)
        return answers.count >= 4
      }
      #expect(answers.sorted() == (0..<4).map { "r\($0): roll call" }, "\(answers)")

      // The slow answer comes after the survey ended: dropped and counted.
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await surveyor.withHandler { h, _ in h.statistics.lateAnswers }) == 1
        })
      #expect(try surveyor.tryReceive() == .wouldBlock)
      #expect(pollEvents(fd) & Int16(POLLIN) == 0)
      let stats = try await surveyor.withHandler { h, _ in (h.statistics, h.currentSurveyID) }
      #expect(stats.0.surveys == 1 && stats.0.copiesSent == 5 && stats.0.drops == 0, "\(stats)")
      #expect(stats.0.answersDelivered == 4 && stats.0.lateAnswers == 1, "\(stats)")
      #expect(stats.0.expiredSurveys == 1 && stats.0.unreadAtExpiry == 0 && stats.1 == nil, "\(stats)")
      for respondent in respondents {
        let sent = try await respondent.withHandler { h, _ in h.statistics }
        #expect(sent.surveysDelivered == 1 && sent.answersSent == 1 && sent.answersWithoutSurvey == 0, "\(sent)")
      }
    }
  }

  @Test("a new survey ends the old one: its answers, queued or still to come, are dropped and counted")
  func newSurveyCancelsOld() async throws {
    try await withSPLoop { loop in
      let surveyor = try Socket(Surveyor0Handler(surveyTime: .seconds(60)), loop: loop)
      defer { surveyor.abort() }
      let fd = surveyor.fileDescriptor
      let raw = try await rawRespondent(of: surveyor)
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 1 })

      try await surveyor.send(utf8("first"))
      let frame1 = try #require(await raw.readFrame(within: .seconds(5)), "the first survey never came")
      let first = try #require(splitRequest(frame1))
      #expect(first.id & 0x8000_0000 != 0 && first.body == utf8("first"), "\(frame1)")
      // Answered at once, and left unread.
      try raw.send(spRequest(id: first.id, utf8("answer 1")))
      #expect(await waitUntil(.seconds(5)) { pollEvents(fd) & Int16(POLLIN) != 0 })

      // The second survey drops the queued answer to the first.
      try await surveyor.send(utf8("second"))
      #expect(try surveyor.tryReceive() == .wouldBlock)
      #expect(surveyor.statistics.staleDrops == 1)
      let frame2 = try #require(await raw.readFrame(within: .seconds(5)), "the second survey never came")
      let second = try #require(splitRequest(frame2))
      #expect(second.id != first.id && second.id & 0x8000_0000 != 0 && second.body == utf8("second"))

      // A late answer to the first, one to an unknown survey, then the
      // answer to the second: only that one is delivered.
      try raw.send(
        spRequest(id: first.id, utf8("answer 1 again")) + spRequest(id: 0x8000_0000 | 12345, utf8("unknown"))
          + spRequest(id: second.id, utf8("answer 2")))
      #expect(string(try await nextSPMessage(surveyor)) == "answer 2")
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try surveyor.tryReceive() == .wouldBlock)
      let stats = try await surveyor.withHandler { h, _ in (h.statistics, h.currentSurveyID) }
      #expect(stats.0.surveys == 2 && stats.0.answersDelivered == 2 && stats.0.lateAnswers == 2, "\(stats)")
      #expect(stats.0.expiredSurveys == 0 && stats.1 == second.id, "\(stats)")
      #expect(surveyor.statistics.pipeFailures == 0)
    }
  }

  @Test("when the survey time passes, unread answers go, the fd stops showing readable, later answers are late")
  func surveyExpires() async throws {
    try await withSPLoop { loop in
      let surveyor = try Socket(Surveyor0Handler(surveyTime: .seconds(1)), loop: loop)
      defer { surveyor.abort() }
      let fd = surveyor.fileDescriptor
      let raw = try await rawRespondent(of: surveyor)
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 1 })

      try await surveyor.send(utf8("quick"))
      let frame = try #require(await raw.readFrame(within: .seconds(5)), "the survey never came")
      let survey = try #require(splitRequest(frame))
      try raw.send(spRequest(id: survey.id, utf8("in time")))
      #expect(await waitUntil(.seconds(5)) { pollEvents(fd) & Int16(POLLIN) != 0 })
      // Not read: once the survey ends it is discarded.
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await surveyor.withHandler { h, _ in h.statistics.expiredSurveys }) == 1
        })
      #expect(pollEvents(fd) & Int16(POLLIN) == 0)
      #expect(try surveyor.tryReceive() == .wouldBlock)

      try raw.send(spRequest(id: survey.id, utf8("too late")))
      #expect(
        await waitUntilAsync(.seconds(5)) {
          (try? await surveyor.withHandler { h, _ in h.statistics.lateAnswers }) == 1
        })
      #expect(try surveyor.tryReceive() == .wouldBlock)
      let stats = try await surveyor.withHandler { h, _ in h.statistics }
      #expect(stats.answersDelivered == 1 && stats.unreadAtExpiry == 1, "\(stats)")
    }
  }

  @Test("RESPONDENT: an answer with no survey is dropped and counted; answers go back with their backtrace; TTL")
  func respondentRules() async throws {
    try await withSPLoop { loop in
      let respondent = try Socket(Respondent0Handler(ttl: 3), loop: loop)
      defer { respondent.abort() }
      func stats() async -> Respondent0Handler.Statistics? {
        try? await respondent.withHandler { h, _ in h.statistics }
      }

      // Nothing to answer: the send is accepted (it cannot be refused at
      // the call, as with REP) and dropped on the loop, counted.
      #expect(try respondent.trySend(utf8("unsolicited")))
      #expect(await waitUntilAsync(.seconds(5)) { await stats()?.answersWithoutSurvey == 1 })
      #expect(respondent.statistics.messagesSent == 1)

      let bound = try respondent.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try raw.send(spHeader(0x62))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x63))

      // A survey that went through two devices: two hop words, then the id.
      // The unsolicited send above did not take its turn.
      let backtrace = spWord(7) + spWord(9) + spWord(0x8000_0042)
      try raw.send(spLength(UInt64(backtrace.count + 1)) + backtrace + utf8("q"))
      #expect(string(try await nextSPMessage(respondent)) == "q")
      try await respondent.send(utf8("a"))
      #expect(await raw.readFrame(within: .seconds(5)) == backtrace + utf8("a"))

      // Three hops and the id exceed a TTL of 3: dropped, the pipe stays.
      let tooFar = spWord(1) + spWord(2) + spWord(3) + spWord(0x8000_0043)
      try raw.send(spLength(UInt64(tooFar.count + 1)) + tooFar + utf8("x"))
      try raw.send(spLength(5) + spWord(0x8000_0044) + utf8("r"))
      #expect(string(try await nextSPMessage(respondent)) == "r")
      try await respondent.send(utf8("b"))
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(0x8000_0044) + utf8("b"))

      // Every survey answered: the next send has none to go to.
      #expect(try respondent.trySend(utf8("again unsolicited")))
      #expect(await waitUntilAsync(.seconds(5)) { await stats()?.answersWithoutSurvey == 2 })
      let totals = try #require(await stats())
      #expect(totals.surveysDelivered == 2 && totals.answersSent == 2 && totals.surveysOverTTL == 1, "\(totals)")
      #expect(try await respondent.withHandler { h, _ in h.unansweredSurveys } == 0)
      #expect(respondent.statistics.pipeFailures == 0)
    }
  }

  @Test(
    "BUS among four sockets connected pairwise: each message reaches the three others once, never its sender",
    arguments: Kind.allCases)
  func busMesh(kind: Kind) async throws {
    try await withSPLoop { loop in
      let buses = try (0..<4).map { _ in try Socket(Bus0Handler(), loop: loop) }
      defer { for bus in buses { bus.abort() } }
      var urls: [String] = []
      for (n, bus) in buses.enumerated() { urls.append(try listenURL(bus, kind, "bus\(n)")) }
      // Every pair connected once: the lower-numbered member dials.
      for i in 0..<buses.count {
        for j in (i + 1)..<buses.count { try buses[i].dial(urls[j]) }
      }
      for bus in buses { #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(bus) == 3 }) }

      let perSender = 5
      for (n, bus) in buses.enumerated() {
        for k in 0..<perSender { #expect(try bus.trySend(utf8("m\(k) from \(n)"))) }
      }
      var got: [[String]] = Array(repeating: [], count: buses.count)
      let expected = perSender * (buses.count - 1)
      let all = try await waitUntil(.seconds(20), every: .milliseconds(2)) {
        for (n, bus) in buses.enumerated() { try takeQueued(bus, into: &got[n]) }
        return got.allSatisfy { $0.count >= expected }
      }
      #expect(all, "\(got.map(\.count))")
      // Nothing more comes (a duplicate or an echo would).
      try? await Task.sleep(for: .milliseconds(200))
      for (n, bus) in buses.enumerated() { try takeQueued(bus, into: &got[n]) }

      for (n, messages) in got.enumerated() {
        #expect(messages.count == expected, "bus \(n): \(messages)")
        #expect(!messages.contains { $0.hasSuffix("from \(n)") }, "bus \(n) heard itself: \(messages)")
        for sender in 0..<buses.count where sender != n {
          // Each sender's messages once each, in the order sent.
          let stream = messages.filter { $0.hasSuffix("from \(sender)") }
          #expect(stream == (0..<perSender).map { "m\($0) from \(sender)" }, "bus \(n) from \(sender): \(stream)")
        }
      }
      for bus in buses {
        let stats = try await bus.withHandler { h, _ in h.statistics }
        #expect(stats.sent == perSender && stats.copiesSent == expected && stats.drops == 0, "\(stats)")
        #expect(stats.received == expected, "\(stats)")
      }
    }
  }

  @Test("BUS is not a relay: in a star, a leaf's message reaches the hub only")
  func busStar() async throws {
    try await withSPLoop { loop in
      let hub = try Socket(Bus0Handler(), loop: loop)
      let leaves = try (0..<2).map { _ in try Socket(Bus0Handler(), loop: loop) }
      defer {
        hub.abort()
        for leaf in leaves { leaf.abort() }
      }
      let url = try dialURL(try hub.listen("tcp://127.0.0.1:0"))
      for leaf in leaves { try leaf.dial(url) }
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(hub) == 2 })
      for leaf in leaves { #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(leaf) == 1 }) }

      #expect(try leaves[0].trySend(utf8("from leaf 0")))
      #expect(string(try await nextSPMessage(hub)) == "from leaf 0")
      #expect(try hub.trySend(utf8("from the hub")))
      for leaf in leaves { #expect(string(try await nextSPMessage(leaf)) == "from the hub") }
      try? await Task.sleep(for: .milliseconds(200))
      for leaf in leaves { #expect(try leaf.tryReceive() == .wouldBlock) }
      #expect(try hub.tryReceive() == .wouldBlock)
    }
  }

  @Test("bad peers fail their own pipe only: a SURVEYOR dialing a REP, a BUS dialing a PAIR, a bad answer")
  func badPeers() async throws {
    try await withSPLoop { loop in
      let surveyor = try Socket(Surveyor0Handler(surveyTime: .seconds(10)), loop: loop)
      let rep = try Socket(Rep0Handler(), loop: loop)
      let good = try Socket(Respondent0Handler(), loop: loop)
      let bus = try Socket(Bus0Handler(), loop: loop)
      let pair = try Socket(Pair0Handler(), loop: loop)
      let respondent = try Socket(Respondent0Handler(), loop: loop)
      defer {
        surveyor.abort()
        rep.abort()
        good.abort()
        bus.abort()
        pair.abort()
        respondent.abort()
      }
      let slow = ReconnectPolicy(minimum: .seconds(30))

      // A SURVEYOR dialing a REP: both sides refuse the other's header.
      try surveyor.dial(try dialURL(try rep.listen("tcp://127.0.0.1:0")), reconnect: slow)
      try await expectPipeFailure(
        surveyor, "incompatible SP peer: protocol 0x31 (REP), surveyor needs 0x63 (RESPONDENT)")
      try await expectPipeFailure(rep, "incompatible SP peer: protocol 0x62 (SURVEYOR), rep needs 0x30 (REQ)")

      // The surveyor's good respondent is not disturbed.
      let surveyorURL = try dialURL(try surveyor.listen("tcp://127.0.0.1:0"))
      try good.dial(surveyorURL)
      let task = answerSurveys(good, name: "good")
      defer { task.cancel() }
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 1 })
      try await surveyor.send(utf8("still there?"))
      #expect(string(try await nextSPMessage(surveyor)) == "good: still there?")

      // An answer whose survey id lacks the high bit fails that pipe only.
      let raw = try await rawRespondent(of: surveyor, url: surveyorURL)
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 2 })
      try await surveyor.send(utf8("and you?"))
      #expect(string(try await nextSPMessage(surveyor)) == "good: and you?")
      let frame = try #require(await raw.readFrame(within: .seconds(5)), "the survey never reached the raw peer")
      let survey = try #require(splitRequest(frame))
      try raw.send(spRequest(id: survey.id & 0x7fff_ffff, utf8("bad")))
      #expect(await raw.waitForClose(within: .seconds(10)).closure != nil, "the surveyor kept the bad pipe")
      try await expectPipeFailure(surveyor, "lacks the high bit")
      #expect(await waitUntilAsync(.seconds(10)) { await readySPPipes(surveyor) == 1 })
      try await surveyor.send(utf8("last"))
      #expect(string(try await nextSPMessage(surveyor)) == "good: last")

      // A BUS dialing a PAIR.
      try bus.dial(try dialURL(try pair.listen("tcp://127.0.0.1:0")), reconnect: slow)
      try await expectPipeFailure(bus, "incompatible SP peer: protocol 0x10 (PAIR), bus needs 0x70 (BUS)")
      try await expectPipeFailure(pair, "incompatible SP peer: protocol 0x70 (BUS), pair needs 0x10 (PAIR)")

      // A REQ where a SURVEYOR should be.
      let bound = try respondent.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let req = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try req.send(spHeader(0x30))
      let end = await req.waitForClose(within: .seconds(10))
      #expect(end.closure != nil, "our RESPONDENT kept the connection")
      #expect(end.bytes == spHeader(0x63), "\(end.bytes)")
      try await expectPipeFailure(
        respondent, "incompatible SP peer: protocol 0x30 (REQ), respondent needs 0x62 (SURVEYOR)")
    }
  }
}

// MARK: - Helpers

/// The SP handlers whose pipe layer the tests look at.
private protocol HasSPPipes: SocketHandler {
  var pipes: SPPipes { get }
}
extension Surveyor0Handler: HasSPPipes {}
extension Respondent0Handler: HasSPPipes {}
extension Bus0Handler: HasSPPipes {}
extension Rep0Handler: HasSPPipes {}
extension Pair0Handler: HasSPPipes {}

/// Pipes of `socket` whose SP handshake completed.
private func readySPPipes<H: HasSPPipes>(_ socket: Socket<H>) async -> Int {
  (try? await socket.withHandler { h, _ in h.pipes.ready.count }) ?? -1
}

/// Waits until one of `socket`'s pipes failed for a reason containing `reason`.
private func expectPipeFailure<H: HasSPPipes>(_ socket: Socket<H>, _ reason: String) async throws {
  func reasons() async -> [String] { (try? await socket.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
  let saw = await waitUntilAsync(.seconds(10)) { await reasons().contains { $0.contains(reason) } }
  let all = await reasons()
  #expect(saw, "no failure with \"\(reason)\": \(all)")
}

/// Answers each survey `respondent` receives with "NAME: BODY", after
/// `delay`, until the socket closes.
private func answerSurveys(
  _ respondent: Respondent0Socket, name: String, delay: Duration = .zero
) -> Task<Void, Never> {
  Task {
    do {
      for try await survey in respondent.messages {
        if delay > .zero { try await Task.sleep(for: delay) }
        try await respondent.send(utf8("\(name): ") + survey)
      }
    } catch {}
  }
}

/// A raw RESPONDENT connected to `surveyor` (on `url`, or a new tcp
/// listener), past the header exchange.
private func rawRespondent(of surveyor: Surveyor0Socket, url: String? = nil) async throws -> RawClient {
  var target = url ?? ""
  if url == nil { target = try dialURL(try surveyor.listen("tcp://127.0.0.1:0")) }
  guard let port = target.split(separator: ":").last.flatMap({ UInt16($0) }) else {
    throw InteropFailure("no port in \(target)")
  }
  let raw = try RawClient(connectingTo: try loopback(port))
  try raw.send(spHeader(0x63))
  let header = await raw.read(8, within: .seconds(5)).bytes
  guard header == spHeader(0x62) else { throw InteropFailure("the surveyor's header: \(header)") }
  return raw
}

/// Listens on a fresh address of `kind`; returns the URL to dial.
private func listenURL<H>(_ socket: Socket<H>, _ kind: SPSurveyBusTests.Kind, _ tag: String) throws -> String {
  switch kind {
  case .tcp: return try dialURL(try socket.listen("tcp://127.0.0.1:0"))
  case .ipc:
    let url = "ipc://" + freshIPCPath(tag)
    try socket.listen(url)
    return url
  case .inproc:
    let url = "inproc://sp-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try socket.listen(url)
    return url
  }
}

/// Moves every message queued on `socket` into `messages`, as text.
private func takeQueued<H>(_ socket: Socket<H>, into messages: inout [String]) throws {
  while case .message(let m) = try socket.tryReceive() { messages.append(string(m) ?? "") }
}
