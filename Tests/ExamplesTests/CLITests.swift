import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// The built `userproto` binary, run as a child process: bad option values
/// are refused with a message (exit 64) instead of crashing, and servers
/// print why connections failed.
@Suite("userproto command line", .timeLimit(.minutes(1)), .testThreads)
struct CLITests {
  /// `userproto`, built next to the test bundle.
  static var binary: String {
    var link = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &link, link.count - 1)
    guard n > 0 else { return "userproto" }
    var path = String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while let last = path.last, last != "/" { path.removeLast() }
    return path + "userproto"
  }

  static func run(_ arguments: [String]) async throws -> PeerProcess {
    try #require(access(binary, X_OK) == 0, "\(binary) is not built")
    let process = try PeerProcess(executable: binary, arguments)
    _ = await process.finish(within: .seconds(20))
    return process
  }

  @Test(
    "an out-of-range option value is refused with a message",
    arguments: [
      (["echo-server", "--seconds=-1"], "--seconds must be between 0 and 1000000000, not -1"),
      (["echo-client", "--count=-1"], "--count must be between 1 and 2147483647, not -1"),
      (["echo-client", "--resend-ms=-5"], "--resend-ms must be between 0 and 1000000000000, not -5"),
      (["echo-client", "--timeout=0"], "--timeout must be between 1 and 1000000000, not 0"),
      (["pub", "--interval-ms=-1"], "--interval-ms must be between 0 and 1000000000000, not -1"),
      (["pub", "--count=-3"], "--count must be between 0 and 2147483647, not -3"),
      (["sub", "--count=0"], "--count must be between 1 and 2147483647, not 0"),
      (["demo", "--seconds=-1"], "--seconds must be more than 0 and at most 3600, not -1.0"),
      (["demo", "--seconds=nan"], "--seconds must be more than 0 and at most 3600, not nan"),
      (
        ["echo-server", "--listen", "tcp://::1:5555"],
        "--listen: bad address tcp://::1:5555: an IPv6 address goes in brackets: tcp://[::1]:5555"
      ),
      (
        ["echo-client", "--dial", "tcp://127.0.0.1:99999"],
        "--dial: bad address tcp://127.0.0.1:99999: the port must be a number from 0 to 65535"
      ),
      (
        ["sub", "--dial", "udp://x:1"],
        "--dial: bad address udp://x:1: expected tcp://HOST:PORT, tcp4://, tcp6:// or ipc://PATH"
      ),
    ])
  func refusesBadValues(arguments: [String], message: String) async throws {
    let process = try await Self.run(arguments)
    #expect(process.exit == .code(64), "\(process)")
    #expect(process.standardError.contains("Error: " + message), "\(process)")
  }

  /// The README's first command runs `userproto demo` through
  /// scripts/demo.sh; with no subcommand at all the binary runs the demo too.
  @Test("the binary with no arguments runs the demo to its summary and exits 0", arguments: [[], ["demo"]])
  func demoFromTheCommandLine(arguments: [String]) async throws {
    try #require(access(Self.binary, X_OK) == 0, "\(Self.binary) is not built")
    let demo = try PeerProcess(executable: Self.binary, arguments)
    defer { demo.terminate() }
    #expect(await demo.finish(within: .seconds(45)) == .code(0), "\(demo)")
    let output = demo.standardOutput
    for line in ["Summary", "  echo:", "  pub/sub:", "  tcp:", "  mask fd:", "  loop:"] {
      #expect(output.contains("\n" + line), "missing \(line): \(demo)")
    }
    #expect(output.contains("  checks:  passed"), "\(demo)")
    #expect(output.contains(" t="), "progress lines: \(demo)")
  }

  /// Runs `echo-server` until the signal, which ends it with its summary
  /// (exit 0) rather than killing it mid-line.
  @Test(
    "echo-server prints each failed connection's reason, and its summary when SIGINT or SIGTERM stops it",
    arguments: [SIGTERM, SIGINT])
  func echoServerPrintsFailures(stopSignal: Int32) async throws {
    let server = try PeerProcess(executable: Self.binary, ["echo-server", "--listen", "tcp://127.0.0.1:0"])
    defer { server.terminate() }
    var port: UInt16?
    _ = await waitUntil(.seconds(20)) {
      // "echo server on tcp://127.0.0.1:PORT (loop: ...)"
      guard let line = server.standardOutput.split(separator: "\n").first,
        let address = line.split(separator: " ").dropFirst(3).first,
        let text = address.split(separator: ":").last
      else { return false }
      port = UInt16(text)
      return port != nil
    }
    let raw = try RawClient(connectingTo: try loopback(try #require(port, "\(server)")))
    try raw.send(spHeader(0x20))
    #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
    // "connection failed: pipe N (tcp://127.0.0.1:PORT, peer 127.0.0.1:PORT): REASON"
    let reason = "): protocol violation: incompatible SP peer: protocol 0x20 (PUB), rep needs 0x30 (REQ)"
    func isFailure(_ line: Substring) -> Bool { line.hasPrefix("connection failed: pipe ") && line.hasSuffix(reason) }
    // Printed while it runs, within its 100 ms reporting period.
    #expect(
      await waitUntil(.seconds(10)) { server.standardOutput.split(separator: "\n").contains(where: isFailure) },
      "\(server)")
    #expect(!server.hasExited, "\(server)")
    server.send(signal: stopSignal)
    #expect(await server.finish(within: .seconds(20)) == .code(0), "\(server)")
    let lines = server.standardOutput.split(separator: "\n")
    #expect(lines.filter(isFailure).count == 1, "\(server)")
    let summary =
      "served 0 requests, dropped 0 replies (requester not reading), 0 replies (requester gone), "
      + "0 requests (over the TTL), 1 failed connections"
    #expect(lines.last == Substring(summary), "\(server)")
  }

  @Test("pub --count 0 publishes until SIGTERM, then prints its summary and exits 0")
  func pubStopsOnSignal() async throws {
    let publisher = try PeerProcess(
      executable: Self.binary, ["pub", "--listen", "tcp://127.0.0.1:0", "--interval-ms", "5"])
    defer { publisher.terminate() }
    #expect(
      await waitUntil(.seconds(20)) { publisher.standardOutput.hasPrefix("publishing on tcp://127.0.0.1:") },
      "\(publisher)")
    publisher.send(signal: SIGTERM)
    #expect(await publisher.finish(within: .seconds(20)) == .code(0), "\(publisher)")
    let last = publisher.standardOutput.split(separator: "\n").last ?? ""
    #expect(last.hasPrefix("published "), "\(publisher)")
    #expect(last.hasSuffix(", delivered 0 copies, dropped 0, 0 failed connections"), "\(publisher)")
  }

  @Test("echo-server on ipc:// prints its address as ipc:// and removes the socket file when done")
  func echoServerIPCAddress() async throws {
    let path = "/tmp/userproto-cli-\(getpid()).sock"
    unlink(path)
    let process = try await Self.run(["echo-server", "--listen", "ipc://" + path, "--seconds", "1"])
    #expect(process.exit == .code(0), "\(process)")
    #expect(process.standardOutput.hasPrefix("echo server on ipc://\(path) (loop: "), "\(process)")
    #expect(access(path, F_OK) != 0, "\(path) is left behind")
  }
}

@Suite("SP addresses", .testThreads)
struct SPAddressTests {
  // Found by Fuzz/Sources/URLFuzzer: getaddrinfo read "localhost\0.example"
  // as "localhost", and inet_pton "127.0.0.1\0.example" as 127.0.0.1.
  @Test("a host with a NUL byte is refused, not cut short at it")
  func refusesNUL() {
    for url in ["tcp://127.0.0.1\0.example:5555", "tcp://localhost\0.example:5555", "tcp://[::1\0]:1"] {
      #expect(throws: SPAddressError.self, "\(url.debugDescription)") { try SPAddress.parse(url) }
    }
  }

  @Test("IPv4, IPv6, any and host names resolve; tcp4:// and tcp6:// keep to a family; URLs round-trip")
  func parses() throws {
    #expect(try SPAddress.parse("tcp://127.0.0.1:5555") == SocketAddress(ipv4: "127.0.0.1", port: 5555))
    #expect(try SPAddress.parse("tcp://[::1]:5555") == SocketAddress(ipv6: "::1", port: 5555))
    #expect(try SPAddress.parse("tcp6://[::1]:5555") == SocketAddress(ipv6: "::1", port: 5555))
    #expect(try SPAddress.parse("tcp4://127.0.0.1:5555") == SocketAddress(ipv4: "127.0.0.1", port: 5555))
    #expect(try SPAddress.parse("tcp://[fe80::1%lo]:1") == SocketAddress(ipv6: "fe80::1%lo", port: 1))
    #expect(try SPAddress.parse("tcp6://*:80") == SocketAddress(ipv6: "::", port: 80))
    #expect(try SPAddress.parse("tcp://[::]:80") == SocketAddress(ipv6: "::", port: 80))
    #expect(try SPAddress.parse("tcp4://localhost:7") == SocketAddress(ipv4: "127.0.0.1", port: 7))
    #expect(SPAddress.url(for: try SPAddress.parse("tcp://[::1]:5555")) == "tcp://[::1]:5555")
    #expect(try SPAddress.parse("tcp://*:80") == SocketAddress(ipv4: "0.0.0.0", port: 80))
    #expect(try SPAddress.parse("tcp://:80") == SocketAddress(ipv4: "0.0.0.0", port: 80))
    // From /etc/hosts through getaddrinfo.
    #expect(try SPAddress.parse("tcp://localhost:7") == SocketAddress(ipv4: "127.0.0.1", port: 7))
    #expect(SPAddress.url(for: try SPAddress.parse("tcp://127.0.0.1:5555")) == "tcp://127.0.0.1:5555")
    #expect(SPAddress.url(for: try SPAddress.parse("ipc:///tmp/x.sock")) == "ipc:///tmp/x.sock")
  }

  @Test(
    "bad addresses are address errors that say what is wrong",
    arguments: [
      ("tcp://::1:5555", "an IPv6 address goes in brackets: tcp://[::1]:5555"),
      ("tcp://[::1:5555", "expected [IPv6 address]:PORT"),
      ("tcp://[::1]5555", "expected tcp://[IPv6 address]:PORT"),
      ("tcp://[127.0.0.1]:1", "127.0.0.1 is not an IPv6 address"),
      ("tcp://[example.com]:1", "example.com is not an IPv6 address"),
      ("tcp4://[::1]:1", "tcp4:// takes an IPv4 address"),
      ("tcp6://127.0.0.1:1", "127.0.0.1 is not an IPv6 address"),
      ("tcp4://::1:1", "an IPv6 address goes in brackets: tcp4://[::1]:1"),
      ("tcp6://no-such-host.invalid:1", "cannot resolve no-such-host.invalid: "),
      ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
      ("tcp://127.0.0.1:x", "the port must be a number from 0 to 65535, not \"x\""),
      ("tcp://no-such-host.invalid:1", "cannot resolve no-such-host.invalid: "),
      ("ipc://", "expected ipc://PATH"),
      ("ipc:///" + String(repeating: "p", count: 200), "the path is longer than a Unix-domain socket path can be"),
      ("inproc://x", "expected tcp://HOST:PORT, tcp4://, tcp6:// or ipc://PATH"),
    ])
  func refuses(url: String, reason: String) {
    do {
      let address = try SPAddress.parse(url)
      Issue.record("\(url) parsed as \(address)")
    } catch {
      #expect(error.url == url)
      #expect(error.reason.hasPrefix(reason), "\(error)")
      #expect(error.description.hasPrefix("bad address \(url): "))
    }
  }
}
