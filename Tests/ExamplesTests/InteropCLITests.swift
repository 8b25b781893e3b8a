import Glibc
import TestSupport
import Testing

// The commands of docs/examples/echo.md and pubsub.md, run as a user runs
// them: the `userproto` binary against nngcat, each side its own process.

@Suite(
  "userproto commands against nngcat",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(1)), .testThreads)
struct InteropCLITests {
  /// Runs `userproto` with `arguments`.
  private func userproto(_ arguments: [String]) throws -> PeerProcess {
    try #require(access(CLITests.binary, X_OK) == 0, "\(CLITests.binary) is not built")
    return try PeerProcess(executable: CLITests.binary, arguments)
  }

  /// The port in the first line of `process` that names a tcp:// address.
  private func announcedPort(_ process: PeerProcess) async -> UInt16? {
    var port: UInt16?
    _ = await waitUntil(.seconds(15)) {
      for line in process.standardOutput.split(separator: "\n") {
        guard let url = line.split(separator: " ").first(where: { $0.hasPrefix("tcp://") }),
          let text = url.split(separator: ":").last
        else { continue }
        port = UInt16(text)
        return true
      }
      return process.hasExited
    }
    return port
  }

  @Test("userproto echo-client against nngcat --rep prints the reply; nngcat printed the request")
  func echoClientAgainstRep() async throws {
    try PeerTool.nngcat.require()
    let (rep, port) = try await startListeningPeer(.nngcat) {
      PeerTool.nngcat.replier(listen: $0, reply: "world")
    }
    defer { rep.terminate() }
    let client = try userproto(["echo-client", "--dial", "tcp://127.0.0.1:\(port)", "--data", "hello"])
    defer { client.terminate() }
    #expect(await client.finish(within: .seconds(20)) == .code(0), "\(client)")
    #expect(client.standardOutput.split(separator: "\n").contains("world"), "\(client)")
    _ = await rep.finish(within: .seconds(10))
    #expect(rep.quotedMessages == ["hello"], "\(rep)")
  }

  @Test("nngcat --req against userproto echo-server gets its body back")
  func reqAgainstEchoServer() async throws {
    try PeerTool.nngcat.require()
    let server = try userproto(["echo-server", "--listen", "tcp://127.0.0.1:0"])
    defer { server.terminate() }
    let port = try #require(await announcedPort(server), "\(server)")
    let req = try PeerProcess(
      .nngcat, PeerTool.nngcat.requester(dial: "tcp://127.0.0.1:\(port)", body: "ping from nngcat", seconds: 10))
    defer { req.terminate() }
    #expect(await req.finish(within: .seconds(20)) == .code(0), "\(req)")
    #expect(req.quotedMessages == ["ping from nngcat"], "\(req)")
    server.send(signal: SIGTERM)
    #expect(await server.finish(within: .seconds(20)) == .code(0), "\(server)")
    let summary =
      "served 1 requests, dropped 0 replies (requester not reading), 0 replies (requester gone), "
      + "0 requests (over the TTL), 0 failed connections"
    #expect(server.standardOutput.split(separator: "\n").last == Substring(summary), "\(server)")
  }

  @Test(
    "over IPv6: nngcat --req against userproto echo-server on tcp://[::1], and userproto echo-client against nngcat --rep",
    .enabled(if: ipv6LoopbackAvailable, "this machine cannot bind ::1 (no IPv6)"))
  func ipv6() async throws {
    try PeerTool.nngcat.require()
    let server = try userproto(["echo-server", "--listen", "tcp://[::1]:0"])
    defer { server.terminate() }
    let port = try #require(await announcedPort(server), "\(server)")
    #expect(server.standardOutput.hasPrefix("echo server on tcp://[::1]:\(port) "), "\(server)")
    let req = try PeerProcess(
      .nngcat, PeerTool.nngcat.requester(dial: "tcp://[::1]:\(port)", body: "ping over IPv6", seconds: 10))
    defer { req.terminate() }
    #expect(await req.finish(within: .seconds(20)) == .code(0), "\(req)")
    #expect(req.quotedMessages == ["ping over IPv6"], "\(req)")

    let (rep, repPort) = try await startListeningPeer(.nngcat, host: "[::1]") {
      PeerTool.nngcat.replier(listen: $0, reply: "world6")
    }
    defer { rep.terminate() }
    let client = try userproto(["echo-client", "--dial", "tcp6://[::1]:\(repPort)", "--data", "hello6"])
    defer { client.terminate() }
    #expect(await client.finish(within: .seconds(20)) == .code(0), "\(client)")
    #expect(client.standardOutput.split(separator: "\n").contains("world6"), "\(client)")
    _ = await rep.finish(within: .seconds(10))
    #expect(rep.quotedMessages == ["hello6"], "\(rep)")
  }

  @Test("userproto sub against nngcat --pub prints the matching messages")
  func subAgainstPub() async throws {
    try PeerTool.nngcat.require()
    let (pub, port) = try await startListeningPeer(.nngcat) {
      PeerTool.nngcat.publisher(listen: $0, message: "news: from nngcat")
    }
    defer { pub.terminate() }
    let sub = try userproto([
      "sub", "--dial", "tcp://127.0.0.1:\(port)", "--subscribe", "news", "--count", "2", "--timeout", "20",
    ])
    defer { sub.terminate() }
    #expect(await sub.finish(within: .seconds(30)) == .code(0), "\(sub)")
    let lines = sub.standardOutput.split(separator: "\n")
    #expect(lines.filter { $0 == "news: from nngcat" }.count == 2, "\(sub)")
  }

  @Test("userproto pub feeds nngcat --sub only its topic")
  func pubFeedsSub() async throws {
    try PeerTool.nngcat.require()
    let pub = try userproto([
      "pub", "--listen", "tcp://127.0.0.1:0", "--data", "news: one", "--data", "sports: two", "--interval-ms", "50",
    ])
    defer { pub.terminate() }
    let port = try #require(await announcedPort(pub), "\(pub)")
    let sub = try PeerProcess(
      .nngcat, PeerTool.nngcat.subscriber(dial: "tcp://127.0.0.1:\(port)", topic: "news", count: 3))
    defer { sub.terminate() }
    #expect(await sub.finish(within: .seconds(30)) == .code(0), "\(sub)")
    #expect(sub.quotedMessages == ["news: one", "news: one", "news: one"], "\(sub)")
  }
}
