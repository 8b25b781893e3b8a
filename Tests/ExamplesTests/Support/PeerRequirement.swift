import Glibc
import TestSupport
import Testing

// When the suites that run real SP peers (nngcat, nanocat) run, and a probe
// for a peer listening on a Unix socket.

/// Whether a peer tool's suite runs: when it is installed, or when
/// USERPROTO_REQUIRE_PEERS=1 says a missing one must fail.
func peerSuiteRuns(installed: Bool, requirePeers: String?) -> Bool { installed || requirePeers == "1" }

extension PeerTool {
  var shouldRun: Bool {
    peerSuiteRuns(installed: isInstalled, requirePeers: getenv("USERPROTO_REQUIRE_PEERS").map { String(cString: $0) })
  }

  /// Fails the test when the tool is missing (the suite only runs then when
  /// USERPROTO_REQUIRE_PEERS=1).
  func require() throws {
    try #require(isInstalled, "USERPROTO_REQUIRE_PEERS=1 but \(path) is not installed")
  }
}

@Suite("Interop peer requirement", .testThreads)
struct PeerRequirementTests {
  @Test("a missing peer skips its suite unless USERPROTO_REQUIRE_PEERS=1")
  func decision() {
    #expect(peerSuiteRuns(installed: true, requirePeers: nil))
    #expect(!peerSuiteRuns(installed: false, requirePeers: nil))
    #expect(!peerSuiteRuns(installed: false, requirePeers: "0"))
    #expect(peerSuiteRuns(installed: false, requirePeers: "1"))
  }
}

enum Interop {
  /// True when a Unix-domain socket listens on `path` (from /proc/net/unix;
  /// nothing connects: nngcat 1.5's IPC listener stops answering after a
  /// probe connection that closes at once).
  static func acceptsConnections(_ path: String) -> Bool {
    let table = String(decoding: readWholeFile("/proc/net/unix"), as: UTF8.self)
    return table.split(separator: "\n").dropFirst().contains { line in
      let fields = line.split(separator: " ")
      // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening.
      return fields.count >= 8 && fields[3] == "00010000" && fields[7] == path
    }
  }
}
