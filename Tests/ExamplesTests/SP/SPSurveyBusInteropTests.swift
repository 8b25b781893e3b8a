import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// The SURVEYOR/RESPONDENT handlers against nngcat (NNG 1.5), and the BUS
// handler against nanocat (nanomsg 1.1: nngcat 1.5.2 has no bus), as child
// processes. A missing tool skips its suite, saying so;
// USERPROTO_REQUIRE_PEERS=1 makes it run and fail.
//
// nngcat's surveyor is used without --interval: with it, nngcat receives
// with a timeout of the interval minus the time its send took, which goes
// negative ("Cannot set recv timeout: Invalid argument") when the send
// waited for a peer. Without it, nngcat sends one survey, prints the
// answers for its survey time (1 s) and exits 0; it dials our listening
// socket, so the peer is there at once.

@Suite(
  "SP SURVEYOR/RESPONDENT interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPSurveyNNGTests {
  @Test(
    "our SURVEYOR gets the answers of two nngcat --respondent0 dialing it", arguments: SPInteropTransport.allCases)
  func ourSurveyor(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let surveyor = try Socket(Surveyor0Handler(surveyTime: .seconds(5)), loop: loop)
      defer { surveyor.abort() }
      let url = try listenURL(surveyor, transport, "nngcat-respondent")
      // Each prints the surveys it gets quoted and answers them with --data.
      let peers = try (0..<2).map { n in
        try PeerProcess(.nngcat, ["--respondent0", "--dial", url, "--data", "answer \(n)", "-Q"])
      }
      defer { for peer in peers { peer.terminate() } }
      let up = await waitUntilAsync(.seconds(10)) {
        (try? await surveyor.withHandler { h, _ in h.pipes.ready.count }) == 2
      }
      #expect(up, "\(peers)")

      for round in 0..<2 {
        let question = "census \(round) over \(transport)"
        try await surveyor.send(utf8(question))
        var answers: [String] = []
        for _ in 0..<2 {
          let answer = try await nextSPMessage(surveyor, within: .seconds(5))
          answers.append(string(answer) ?? "none")
        }
        #expect(answers.sorted() == ["answer 0", "answer 1"], "round \(round): \(peers)")
      }
      for peer in peers {
        let printed = await waitUntil(.seconds(5)) { peer.quotedMessages.count >= 2 }
        #expect(printed && peer.quotedMessages == (0..<2).map { "census \($0) over \(transport)" }, "\(peer)")
      }
      let stats = try await surveyor.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.surveys == 2 && stats.0.answersDelivered == 4 && stats.0.lateAnswers == 0, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
    }
  }

  @Test("nngcat --surveyor0 dialing our RESPONDENT prints our answer", arguments: SPInteropTransport.allCases)
  func theirSurveyor(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let respondent = try Socket(Respondent0Handler(), loop: loop)
      defer { respondent.abort() }
      let url = try listenURL(respondent, transport, "nngcat-surveyor")
      let server = Task {
        do {
          for try await survey in respondent.messages { try await respondent.send(utf8("ours: ") + survey) }
        } catch {}
      }
      defer { server.cancel() }
      let question = "census over \(transport)"
      let peer = try PeerProcess(.nngcat, ["--surveyor0", "--dial", url, "--data", question, "-Q"])
      defer { peer.terminate() }
      #expect(await peer.finish(within: .seconds(15)) == .code(0), "\(peer)")
      #expect(peer.quotedMessages == ["ours: " + question], "\(peer)")
      let stats = try await respondent.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.surveysDelivered == 1 && stats.0.answersSent == 1, "\(stats)")
      #expect(stats.0.answersWithoutSurvey == 0 && stats.0.surveysOverTTL == 0, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
    }
  }
}

@Suite(
  "SP BUS interop with nanocat (nanomsg)",
  .enabled(
    if: PeerTool.nanocat.shouldRun,
    "nanocat (nanomsg-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPBusNanomsgTests {
  @Test("our BUS and nanocat --bus hear each other", arguments: SPInteropTransport.allCases)
  func bus(transport: SPInteropTransport) async throws {
    try PeerTool.nanocat.require()
    try await withSPLoop { loop in
      let bus = try Socket(Bus0Handler(), loop: loop)
      defer { bus.abort() }
      let url = try listenURL(bus, transport, "nanocat-bus")
      // nanocat sends its --data every 200 ms and prints what it hears quoted.
      let theirs = "from nanocat over \(transport)"
      let peer = try PeerProcess(.nanocat, ["--bus", "--connect", url, "-D", theirs, "-i", "0.2", "-Q"])
      defer { peer.terminate() }
      #expect(try await nextSPMessage(bus, within: .seconds(15)) == utf8(theirs), "\(peer)")

      // Its pipe is up (its message came): ours reach it, once each.
      let ours = (0..<3).map { "from us \($0) over \(transport)" }
      for text in ours { #expect(try bus.trySend(utf8(text))) }
      #expect(await waitUntil(.seconds(10)) { peer.quotedMessages.count >= ours.count }, "\(peer)")
      try? await Task.sleep(for: .milliseconds(300))
      #expect(peer.quotedMessages == ours, "\(peer)")
      let stats = try await bus.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.sent == ours.count && stats.0.copiesSent == ours.count && stats.0.drops == 0, "\(stats)")
      #expect(stats.0.received >= 1, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
    }
  }
}

/// Listens on a fresh address over `transport`; returns the URL to dial.
private func listenURL<H>(_ socket: Socket<H>, _ transport: SPInteropTransport, _ tag: String) throws -> String {
  switch transport {
  case .tcp: return try dialURL(try socket.listen("tcp://127.0.0.1:0"))
  case .ipc:
    let url = "ipc://" + freshIPCPath(tag)
    try socket.listen(url)
    return url
  }
}
