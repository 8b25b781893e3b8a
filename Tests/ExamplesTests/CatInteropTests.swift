import Glibc
import TestSupport
import Testing

/// `userproto cat` in nngcat's place: each scenario runs with every
/// pairing of nngcat and `userproto cat` on its two sides, with the same
/// arguments, and every pairing must print what nngcat against nngcat
/// prints (the expected stdout below was observed from nngcat 1.5.2 on
/// both sides, and the nngcat-only pairing checks it again on each run).
@Suite(
  "userproto cat against nngcat",
  .enabled(
    if: PeerTool.nngcat.shouldRun, "nngcat (nng-utils) is not installed; USERPROTO_REQUIRE_PEERS=1 makes that fail"),
  .timeLimit(.minutes(2)), .testThreads)
struct CatInteropTests {
  /// Which program plays a side.
  enum Side: String, CaseIterable, Sendable, CustomStringConvertible {
    case nngcat, userproto
    var description: String { rawValue }
  }

  private func start(_ side: Side, _ arguments: [String]) throws -> PeerProcess {
    switch side {
    case .nngcat:
      return try PeerProcess(.nngcat, arguments)
    case .userproto:
      try #require(access(CLITests.binary, X_OK) == 0, "\(CLITests.binary) is not built")
      return try PeerProcess(executable: CLITests.binary, ["cat"] + arguments)
    }
  }

  /// Starts `side` listening on a free port (`arguments(url)`), retried on
  /// another port if that one was taken meanwhile.
  private func startListening(_ side: Side, _ arguments: (String) -> [String]) async throws -> (PeerProcess, String) {
    var failures: [String] = []
    for _ in 0..<4 {
      let port = try unusedPort()
      let url = "tcp://127.0.0.1:\(port)"
      let peer = try start(side, arguments(url))
      let up = await waitUntil(.seconds(5)) { isListening(pid: peer.pid, port: port) || peer.hasExited }
      if up && !peer.hasExited { return (peer, url) }
      peer.terminate()
      failures.append("\(peer)")
    }
    throw InteropFailure("\(side) never listened:\n" + failures.joined(separator: "\n"))
  }

  /// Runs a listener and a dialer to their ends; both must exit 0. Returns
  /// their stdouts and the URL.
  private func run(
    listener: Side, _ listenerArguments: [String], dialer: Side, _ dialerArguments: [String]
  ) async throws -> (listener: String, dialer: String, url: String) {
    let (listening, url) = try await startListening(listener) { listenerArguments + ["--listen", $0] }
    defer { listening.terminate() }
    let dialing = try start(dialer, dialerArguments + ["--dial", url])
    defer { dialing.terminate() }
    #expect(await dialing.finish(within: .seconds(30)) == .code(0), "\(dialing)")
    #expect(await listening.finish(within: .seconds(30)) == .code(0), "\(listening)")
    return (listening.standardOutput, dialing.standardOutput, url)
  }

  /// `a"b\` TAB LF CR NUL 0x01 0x7F 0x80 0xFF `~ z`: through `--file`, as
  /// an argument cannot carry NUL (nor invalid UTF-8 through Swift).
  static let tricky: [UInt8] = [
    0x61, 0x22, 0x62, 0x5C, 0x09, 0x0A, 0x0D, 0x00, 0x01, 0x7F, 0x80, 0xFF, 0x7E, 0x20, 0x7A,
  ]

  /// Observed from nngcat 1.5.2 (`--pull0 ... -Q -C 2` fed twice by
  /// `--push0 ... -F FILE -C 2`).
  static let trickyQuoted = #""a\"b\\\t\n\r\x00\x01\x7f\x80\xff~ z""# + "\n"

  private func writeTrickyFile() throws -> String {
    let path = "/tmp/userproto-cat-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).bin"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw InteropFailure("cannot create \(path): errno \(errno)") }
    defer { close(fd) }
    let written = Self.tricky.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == Self.tricky.count else { throw InteropFailure("cannot write \(path): errno \(errno)") }
    return path
  }

  @Test("push -> pull: the pull prints nngcat's quoted lines", arguments: Side.allCases, Side.allCases)
  func pushToPull(pull: Side, push: Side) async throws {
    try PeerTool.nngcat.require()
    let file = try writeTrickyFile()
    defer { unlink(file) }
    let out = try await run(
      listener: pull, ["--pull0", "-Q", "-C", "2", "--recv-timeout", "20"],
      dialer: push, ["--push0", "-F", file, "-C", "2"])
    #expect(out.listener == Self.trickyQuoted + Self.trickyQuoted)
    #expect(out.dialer == "")
  }

  @Test("req -> rep: the rep prints the request, the req the reply", arguments: Side.allCases, Side.allCases)
  func reqToRep(rep: Side, req: Side) async throws {
    try PeerTool.nngcat.require()
    let out = try await run(
      listener: rep, ["--rep0", "-D", #"pong "1""#, "-Q", "-C", "1"],
      dialer: req, ["--req0", "-D", #"ping "2""#, "-Q", "--recv-timeout", "20"])
    // Observed from nngcat 1.5.2 on both sides.
    #expect(out.listener == #""ping \"2\"""# + "\n")
    #expect(out.dialer == #""pong \"1\"""# + "\n")
  }

  @Test("pair1 both ways: each side sends once and prints the other's message", arguments: Side.allCases, Side.allCases)
  func pair1(listener: Side, dialer: Side) async throws {
    try PeerTool.nngcat.require()
    // Each sends once (the listener's send waits for its peer), then
    // prints what comes until 5 s pass without a message, and exits 0.
    let out = try await run(
      listener: listener, ["--pair1", "-D", #"pong "1""#, "-Q", "--recv-timeout", "5"],
      dialer: dialer, ["--pair1", "-D", #"ping "2""#, "-Q", "--recv-timeout", "5"])
    // Observed from nngcat 1.5.2 on both sides.
    #expect(out.listener == #""ping \"2\"""# + "\n")
    #expect(out.dialer == #""pong \"1\"""# + "\n")
  }

  @Test(
    "the req listens, the rep dials: --verbose lines, --hex, --delay", arguments: Side.allCases, Side.allCases)
  func reqListensRepDials(req: Side, rep: Side) async throws {
    try PeerTool.nngcat.require()
    let out = try await run(
      listener: req, ["--req0", "-D", "hi", "--hex", "--recv-timeout", "20", "--delay", "1", "-v"],
      dialer: rep, ["--rep0", "-D", "ok", "--hex", "-C", "1", "-v"])
    // Observed from nngcat 1.5.2 on both sides.
    #expect(out.listener == "Listening at: \(out.url)\n" + #""\x6f\x6b""# + "\n")
    #expect(out.dialer == "Connected to: \(out.url)\n" + #""\x68\x69""# + "\n")
  }
}
