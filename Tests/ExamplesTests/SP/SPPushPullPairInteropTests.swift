import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// The PUSH/PULL and PAIR handlers against nngcat (NNG 1.5) as a child
// process. A missing nngcat skips the suite, saying so;
// USERPROTO_REQUIRE_PEERS=1 makes it run and fail.

@Suite(
  "SP PUSH/PULL and PAIR interop with nngcat (NNG)",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct SPPushPullPairNNGTests {
  @Test("our PUSH feeds nngcat --pull0, which prints every message in order", arguments: SPInteropTransport.allCases)
  func ourPush(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let count = 20
      let peer: PeerProcess
      let url: String
      switch transport {
      case .tcp:
        let (started, port) = try await startListeningPeer(.nngcat) { NNGPeer.puller(listen: $0, count: count) }
        peer = started
        url = "tcp://127.0.0.1:\(port)"
      case .ipc:
        let path = freshIPCPath("nngcat-pull")
        url = "ipc://" + path
        peer = try PeerProcess(.nngcat, NNGPeer.puller(listen: url, count: count))
        #expect(await waitUntil(.seconds(5)) { Interop.acceptsConnections(path) || peer.hasExited }, "\(peer)")
      }
      defer { peer.terminate() }
      let push = try Socket(Push0Handler(), loop: loop)
      defer { push.abort() }
      try push.dial(url)
      // Sent at once: held until the pipe's handshake is done.
      let bodies = (0..<count).map { "job \($0) over \(transport): \"quoted\" \\ tab\there" }
      for body in bodies { #expect(try push.trySend(utf8(body))) }
      #expect(await peer.finish(within: .seconds(20)) == .code(0), "\(peer)")
      #expect(peer.quotedMessages == bodies, "\(peer)")
      let stats = try await push.withHandler { h, _ in h.statistics }
      #expect(stats.sent == count && stats.ignoredMessages == 0, "\(stats)")
    }
  }

  @Test("nngcat --push0 feeds our PULL", arguments: SPInteropTransport.allCases)
  func theirPush(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let pull = try Socket(Pull0Handler(), loop: loop)
      defer { pull.abort() }
      let url: String
      switch transport {
      case .tcp: url = try dialURL(try pull.listen("tcp://127.0.0.1:0"))
      case .ipc:
        url = "ipc://" + freshIPCPath("nngcat-push")
        try pull.listen(url)
      }
      let count = 25
      let body = "from nngcat over \(transport)"
      let peer = try PeerProcess(.nngcat, NNGPeer.pusher(dial: url, data: body, count: count))
      defer { peer.terminate() }
      for n in 0..<count {
        let message = try #require(
          try await nextSPMessage(pull, within: .seconds(15)), "message \(n) of \(count) never came: \(peer)")
        #expect(message == utf8(body))
      }
      #expect(await peer.finish(within: .seconds(10)) == .code(0), "\(peer)")
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try pull.tryReceive() == .wouldBlock)
      let stats = try await pull.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.received == count, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
    }
  }

  // nngcat 1.5.2's PAIR with --data and --interval sends, then receives
  // with a timeout of the interval minus the time since the send began; a send
  // that waited over the interval for a peer (nngcat listening, our dial
  // late on a loaded machine) makes that timeout negative, nngcat prints
  // "Cannot set recv timeout: Invalid argument" and closes the pipe. So in
  // the two-way test nngcat dials (the peer is there at once), and a
  // listening nngcat only receives.
  @Test(
    "our PAIR and nngcat --pair0 exchange messages both ways (nngcat dialing)", arguments: SPInteropTransport.allCases)
  func pair(transport: SPInteropTransport) async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let pair = try Socket(Pair0Handler(), loop: loop)
      defer { pair.abort() }
      let theirs = "from nngcat over \(transport)"
      let url: String
      switch transport {
      case .tcp: url = try dialURL(try pair.listen("tcp://127.0.0.1:0"))
      case .ipc:
        url = "ipc://" + freshIPCPath("nngcat-pair")
        try pair.listen(url)
      }
      let peer = try PeerProcess(.nngcat, NNGPeer.pair(["--dial", url], data: theirs))
      defer { peer.terminate() }
      // Sent at once: held until nngcat is paired with us.
      let ours = (0..<5).map { "from us \($0) over \(transport)" }
      for text in ours { #expect(try pair.trySend(utf8(text))) }
      #expect(try await nextSPMessage(pair, within: .seconds(15)) == utf8(theirs), "\(peer)")
      #expect(await waitUntil(.seconds(10)) { peer.quotedMessages == ours }, "\(peer)")
      let stats = try await pair.withHandler { h, _ in (h.statistics, h.pipes.recentFailures) }
      #expect(stats.0.sent == ours.count && stats.0.received >= 1 && stats.0.refusedPipes == 0, "\(stats)")
      #expect(stats.1.isEmpty, "\(stats.1)")
    }
  }

  @Test("our PAIR dials nngcat --pair0 --listen over tcp, which prints what we send")
  func pairToListeningNNG() async throws {
    try PeerTool.nngcat.require()
    try await withSPLoop { loop in
      let count = 5
      let (peer, port) = try await startListeningPeer(.nngcat) {
        ["--pair0", "--listen", $0, "-Q", "--count", "\(count)", "--recv-timeout", "15"]
      }
      defer { peer.terminate() }
      let pair = try Socket(Pair0Handler(), loop: loop)
      defer { pair.abort() }
      try pair.dial("tcp://127.0.0.1:\(port)")
      let ours = (0..<count).map { "to a listening nngcat \($0)" }
      for text in ours { #expect(try pair.trySend(utf8(text))) }
      #expect(await peer.finish(within: .seconds(20)) == .code(0), "\(peer)")
      #expect(peer.quotedMessages == ours, "\(peer)")
    }
  }
}

/// nngcat's arguments for the pipeline and pair peers.
private enum NNGPeer {
  /// A PULL listener that prints `count` messages quoted, one a line, and
  /// exits 0 (`--format ascii` would print them with no separator between
  /// them in nngcat 1.5.2); it gives up after 15 s without one.
  static func puller(listen url: String, count: Int) -> [String] {
    ["--pull0", "--listen", url, "-Q", "--count", "\(count)", "--recv-timeout", "15"]
  }

  /// A PUSH that dials `url` (synchronously: it exits 1 if nothing
  /// listens), sends `data` `count` times and exits 0.
  static func pusher(dial url: String, data: String, count: Int) -> [String] {
    ["--push0", "--dial", url, "--data", data, "--count", "\(count)"]
  }

  /// A PAIR on `address` (`--listen URL` or `--dial URL`) that sends `data`
  /// every second and prints what it receives quoted, until killed.
  static func pair(_ address: [String], data: String) -> [String] {
    ["--pair0"] + address + ["--data", data, "--interval", "1", "-Q"]
  }
}
