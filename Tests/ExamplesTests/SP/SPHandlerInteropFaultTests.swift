import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// The SP handlers against real peers of the wrong protocol (nngcat from
// NNG 1.5, nanocat from nanomsg 1.1, as child processes): the wrong pipe
// fails with a reason naming the protocol, and nothing else is disturbed.
// A missing tool skips its suite, saying so; USERPROTO_REQUIRE_PEERS=1
// makes the suite run and fail.

@Suite(
  "SP handlers against incompatible nngcat (NNG) peers",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPHandlerNNGFaultTests {
  @Test("nngcat --pub dialing our REP is not served and leaves the other requesters alone")
  func incompatibleDialer() async throws {
    try await SPInteropFaults.incompatiblePeerAgainstOurRep(.nngcat)
  }

  @Test("our SUB dialing nngcat --rep fails that pipe, naming the protocol id; the socket does not fail")
  func subscriberAgainstReplier() async throws {
    try await SPInteropFaults.ourSubAgainstTheirRep(.nngcat)
  }
}

@Suite(
  "SP handlers against incompatible nanocat (nanomsg) peers",
  .enabled(
    if: PeerTool.nanocat.shouldRun,
    "nanocat (nanomsg-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPHandlerNanomsgFaultTests {
  @Test("nanocat --pub dialing our REP is not served and leaves the other requesters alone")
  func incompatibleDialer() async throws {
    try await SPInteropFaults.incompatiblePeerAgainstOurRep(.nanocat)
  }

  @Test("our SUB dialing nanocat --rep fails that pipe, naming the protocol id; the socket does not fail")
  func subscriberAgainstReplier() async throws {
    try await SPInteropFaults.ourSubAgainstTheirRep(.nanocat)
  }
}

enum SPInteropFaults {
  /// A real PUB dialing our REP while one of our REQ sockets uses it.
  static func incompatiblePeerAgainstOurRep(_ tool: PeerTool) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let url = try dialURL(try rep.listen("tcp://127.0.0.1:0"))
      serve(rep, ServerControl("rep"))
      let good = try Socket(Req0Handler(), loop: loop)
      defer { good.abort() }
      try good.dial(url)
      #expect(try await request(good, "before") == "rep: before")
      let peer = try PeerProcess(tool, tool.dialingPublisher(dial: url, message: "not a request"))
      defer { peer.terminate() }
      switch tool {
      case .nngcat:
        // Its dial is synchronous and it exits by itself. Exit 0: it reached
        // our REP and exchanged headers. Exit 1 with "Connection shutdown":
        // we closed while it negotiated. A refused dial would say
        // "Connection refused".
        let exit = await peer.finish(within: .seconds(5))
        #expect(!peer.killed, "\(peer)")
        #expect(
          exit == .code(0) || (exit == .code(1) && peer.standardError.contains("Connection shutdown")), "\(peer)")
      case .nanocat:
        // It reconnects every 100 ms; let it try for a second.
        #expect(await peer.waitForExit(within: .seconds(1)) == nil, "\(peer)")
      }
      #expect(try await request(good, "during") == "rep: during")
      peer.terminate()
      // Its pipes were closed; only the REQ socket's remains.
      #expect(await waitUntil(.seconds(5)) { rep.pipeCount == 1 }, "pipes: \(rep.pipeCount)")
      #expect(try await request(good, "after") == "rep: after")
      let (stats, reasons) = try await rep.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.repliesSent == 3 && stats.requestsDelivered == 3, "\(stats)")
      // The REP says why it dropped the peer.
      #expect(
        reasons.contains { $0.contains("incompatible SP peer: protocol 0x20 (PUB), rep needs 0x30 (REQ)") },
        "\(reasons)")
    }
  }

  /// Our SUB dialing their REP. The first design failed the one-connection
  /// socket (POLLERR, the error received once). With pipes only that pipe
  /// fails: the reason names the peer's protocol id, the socket's fd shows
  /// no error, and the dialer tries again after its back-off.
  static func ourSubAgainstTheirRep(_ tool: PeerTool) async throws {
    try tool.require()
    try await withSPLoop { loop in
      let (peer, port) = try await startListeningPeer(tool) { tool.replier(listen: $0, reply: "x") }
      defer { peer.terminate() }
      let sub = try Socket(Sub0Handler(subscriptions: [[]]), loop: loop)
      defer { sub.abort() }
      try sub.dial("tcp://127.0.0.1:\(port)", reconnect: ReconnectPolicy(minimum: .seconds(1)))
      func reasons() async -> [String] { (try? await sub.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      let failed = await waitUntilAsync(.seconds(10)) { await reasons().contains { $0.contains("0x31") } }
      let seen = await reasons()
      #expect(failed, "\(seen) \(peer)")
      #expect(
        seen.contains { $0.contains("incompatible SP peer: protocol 0x31 (REP), sub needs 0x20 (PUB)") }, "\(seen)")
      #expect(sub.statistics.pipeFailures >= 1)
      let fd = sub.fileDescriptor
      #expect(pollEvents(fd, Int16(POLLIN)) & Int16(POLLERR | POLLIN) == 0)
      #expect(try sub.tryReceive() == .wouldBlock)
      #expect(!peer.hasExited, "\(peer)")
      #expect(peer.quotedMessages.isEmpty, "\(peer)")
    }
  }
}
