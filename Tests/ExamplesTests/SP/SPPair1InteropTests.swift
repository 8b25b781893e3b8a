import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// PAIR v1 against nngcat (NNG 1.5) as a child process, in both roles, over
// tcp:// and ipc://; and nngcat's own pair1 bytes seen by a raw TCP peer.
// A missing nngcat skips the suite, saying so; USERPROTO_REQUIRE_PEERS=1
// makes it run and fail. (nanomsg has no PAIR v1, so nanocat is not a peer.)

@Suite(
  "SP PAIR v1 interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPPair1NNGTests {
  // nngcat's PAIR with `--data` and no `--interval` or `--count` sends
  // once (waiting for a peer) and then prints what it receives until killed
  // or its receive timeout: no negative receive timeout can arise (see
  // SPPushPullPairInteropTests), so nngcat may listen or dial.

  @Test("nngcat --pair1 dials our PAIR v1: messages both ways", arguments: SPInteropTransport.allCases)
  func theirDialer(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      let url: String
      switch transport {
      case .tcp: url = try dialURL(try pair.listen("tcp://127.0.0.1:0"))
      case .ipc:
        url = "ipc://" + freshIPCPath("nngcat-pair1")
        try pair.listen(url)
      }
      let theirs = "from nngcat's dialer over \(transport)"
      let peer = try PeerProcess(.nngcat, ["--pair1", "--dial", url, "--data", theirs, "-Q"])
      defer { peer.terminate() }
      // Sent at once: held until nngcat is paired with us.
      let ours = (0..<5).map { "from our listener \($0) over \(transport): \"quoted\" \\ tab\there" }
      for text in ours { #expect(try pair.trySend(utf8(text))) }
      #expect(try await nextSPMessage(pair, within: .seconds(15)) == utf8(theirs), "\(peer)")
      #expect(await waitUntil(.seconds(10)) { peer.quotedMessages == ours }, "\(peer)")
      try await expectClean(pair, sent: ours.count, received: 1)
    }
  }

  @Test("our PAIR v1 dials nngcat --pair1 --listen: messages both ways", arguments: SPInteropTransport.allCases)
  func theirListener(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let theirs = "from nngcat's listener over \(transport)"
      func arguments(_ url: String) -> [String] {
        ["--pair1", "--listen", url, "--data", theirs, "-Q", "--recv-timeout", "20"]
      }
      let peer: PeerProcess
      let url: String
      switch transport {
      case .tcp:
        let (started, port) = try await startListeningPeer(.nngcat) { arguments($0) }
        peer = started
        url = "tcp://127.0.0.1:\(port)"
      case .ipc:
        let path = freshIPCPath("nngcat-pair1-listen")
        url = "ipc://" + path
        peer = try PeerProcess(.nngcat, arguments(url))
        #expect(await waitUntil(.seconds(5)) { Interop.acceptsConnections(path) || peer.hasExited }, "\(peer)")
      }
      defer { peer.terminate() }
      let pair = try Socket(Pair1Handler(), loop: loop)
      defer { pair.abort() }
      try pair.dial(url)
      let ours = (0..<5).map { "from our dialer \($0) over \(transport)" }
      for text in ours { #expect(try pair.trySend(utf8(text))) }
      #expect(try await nextSPMessage(pair, within: .seconds(15)) == utf8(theirs), "\(peer)")
      #expect(await waitUntil(.seconds(10)) { peer.quotedMessages == ours }, "\(peer)")
      try await expectClean(pair, sent: ours.count, received: 1)
    }
  }

  @Test("nngcat's pair1 bytes: its header 0x11, hop count 1 on its message; it drops 9 (over 8), closes on 0x100")
  func nngcatOnTheWire() async throws {
    try PeerTool.nngcat.require()
    let listener = try RawListener()
    let url = "tcp://127.0.0.1:\(try #require(listener.address.port))"
    let peer = try PeerProcess(.nngcat, ["--pair1", "--dial", url, "--data", "hello", "-Q", "--recv-timeout", "20"])
    defer { peer.terminate() }
    let raw = try #require(await listener.accept(within: .seconds(10)), "\(peer)")
    #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x11))
    try raw.send(spHeader(0x11))
    // What NNG's cooked pair1 sends: the length counts the hop count.
    let wire = await raw.read(17, within: .seconds(10)).bytes
    #expect(wire == spLength(9) + spWord(1) + utf8("hello"), "\(wire) \(peer)")

    // What it accepts: the same rules as Pair1Handler's.
    try raw.send(
      pair1Frame(hops: 9, utf8("nine")) + pair1Frame(hops: 8, utf8("eight")) + pair1Frame(hops: 0, utf8("zero")))
    #expect(await waitUntil(.seconds(10)) { peer.quotedMessages == ["eight", "zero"] }, "\(peer)")
    try raw.send(pair1Frame(hops: 0x100, utf8("garbage")) + pair1Frame(hops: 1, utf8("after")))
    let end = await raw.waitForClose(within: .seconds(10))
    #expect(end.closure != nil, "nngcat kept the pipe after hop count 0x100: \(peer)")
    #expect(peer.quotedMessages == ["eight", "zero"], "\(peer)")
  }
}

/// Our PAIR v1 sent and received what was expected and nothing failed.
private func expectClean(_ pair: Pair1Socket, sent: Int, received: Int) async throws {
  let (stats, reasons) = try await pair.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
  #expect(stats.sent == sent && stats.received >= received, "\(stats)")
  #expect(stats.refusedPipes == 0 && stats.messagesOverTTL == 0 && stats.malformedMessages == 0, "\(stats)")
  #expect(reasons.isEmpty, "\(reasons)")
}
