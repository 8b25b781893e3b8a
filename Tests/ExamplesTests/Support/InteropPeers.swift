import Glibc
import Synchronization

// The real nanomsg and NNG command-line peers as child processes: their
// arguments, spawning with a hard timeout, their quoted output, and free
// ports for the ones that listen.

/// A Debian-packaged SP command-line peer.
enum PeerTool: String, Sendable, CustomStringConvertible {
  /// `nngcat` from nng-utils (NNG 1.5).
  case nngcat
  /// `nanocat` from nanomsg-utils (nanomsg 1.1).
  case nanocat

  var path: String { "/usr/bin/" + rawValue }
  var isInstalled: Bool { access(path, X_OK) == 0 }
  var description: String { rawValue }

  /// A REQ that sends `body` once, prints the reply quoted (-Q) and exits;
  /// with no reply it gives up after `seconds`.
  func requester(dial url: String, body: String, seconds: Int) -> [String] {
    switch self {
    case .nngcat: ["--req", "--dial", url, "--data", body, "-Q", "--recv-timeout", "\(seconds)"]
    case .nanocat: ["--req", "--connect", url, "-D", body, "-Q", "--recv-timeout", "\(seconds)"]
    }
  }

  /// A REP that prints each request quoted and answers `reply`. nngcat
  /// exits 200 ms after its first reply; nanocat never exits (kill it).
  func replier(listen url: String, reply: String) -> [String] {
    switch self {
    case .nngcat: ["--rep", "--listen", url, "--data", reply, "-Q", "--count", "1"]
    case .nanocat: ["--rep", "--bind", url, "-D", reply, "-Q"]
    }
  }

  /// A SUB subscribed to `topic` that prints matching messages quoted.
  /// nngcat exits after `count` of them; nanocat exits after 2 s without one.
  func subscriber(dial url: String, topic: String, count: Int) -> [String] {
    switch self {
    case .nngcat: ["--sub", "--dial", url, "--subscribe", topic, "-Q", "--count", "\(count)", "--recv-timeout", "15"]
    case .nanocat: ["--sub", "--connect", url, "--subscribe", topic, "-Q", "--recv-timeout", "10"]
    }
  }

  /// A PUB listener publishing `message` until killed: nngcat every second
  /// (its interval is whole seconds), nanocat every 50 ms. A fixed count
  /// would race the subscribers' connection on a loaded machine: messages
  /// published before a pipe is up are not delivered (PUB semantics).
  func publisher(listen url: String, message: String) -> [String] {
    switch self {
    case .nngcat: ["--pub", "--listen", url, "--data", message, "--interval", "1"]
    case .nanocat: ["--pub", "--bind", url, "-D", message, "-i", "0.05"]
    }
  }

  /// A PUB that dials `url` (an incompatible peer for a REP server). nngcat
  /// dials synchronously, publishes once and exits 0 (1 if the dial
  /// fails); nanocat reconnects and publishes every 100 ms until killed.
  func dialingPublisher(dial url: String, message: String) -> [String] {
    switch self {
    case .nngcat: ["--pub", "--dial", url, "--data", message]
    case .nanocat: ["--pub", "--connect", url, "-D", message, "-i", "0.1"]
    }
  }
}

struct InteropFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// How a child process ended.
enum ProcessExit: Hashable, Sendable, CustomStringConvertible {
  case code(Int32)
  case signal(Int32)

  init(waitStatus status: Int32) {
    self = status & 0x7f == 0 ? .code((status >> 8) & 0xff) : .signal(status & 0x7f)
  }

  var description: String {
    switch self {
    case .code(let code): "exit \(code)"
    case .signal(let signal): "signal \(signal)"
    }
  }
}

/// A peer running as a child process (posix_spawn), its standard output
/// and error going to files. It never outlives its owner: ``terminate()``
/// (or deinit) kills it with SIGKILL and reaps it.
final class PeerProcess: CustomStringConvertible {
  /// The program's name, for messages.
  let name: String
  let path: String
  let arguments: [String]
  let pid: pid_t
  private let outputPath: String
  private let errorPath: String
  private(set) var exit: ProcessExit?
  /// True when the process had to be killed.
  private(set) var killed = false

  private static let serial = Atomic<Int>(0)

  convenience init(_ tool: PeerTool, _ arguments: [String]) throws {
    try self.init(executable: tool.path, arguments)
  }

  /// Runs the program at `path` (our own CLI, say).
  init(executable path: String, _ arguments: [String]) throws {
    self.path = path
    self.name = String(path.split(separator: "/").last ?? "?")
    self.arguments = arguments
    let n = PeerProcess.serial.add(1, ordering: .relaxed).newValue
    let base = "/tmp/userproto-interop-\(getpid())-\(n)-\(name)"
    outputPath = base + ".out"
    errorPath = base + ".err"
    let out = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    let err = open(errorPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    defer {
      if out >= 0 { close(out) }
      if err >= 0 { close(err) }
    }
    guard out >= 0, err >= 0 else { throw InteropFailure("cannot create \(base).*: errno \(errno)") }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, out, 1)
    posix_spawn_file_actions_adddup2(&actions, err, 2)
    // A clean signal state whatever the test runner's threads have.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attributes, &mask)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGPIPE, SIGTERM, SIGINT] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var child = pid_t()
    let rc = posix_spawn(&child, path, &actions, &attributes, argv, environ)
    guard rc == 0 else {
      unlink(outputPath)
      unlink(errorPath)
      throw InteropFailure("posix_spawn \(path): errno \(rc)")
    }
    pid = child
  }

  deinit {
    terminate()
    unlink(outputPath)
    unlink(errorPath)
  }

  /// True once the process has exited (it is then reaped).
  var hasExited: Bool {
    if exit != nil { return true }
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    if r == pid { exit = ProcessExit(waitStatus: status) }
    return exit != nil
  }

  /// Waits up to `timeout` for the process to exit by itself; nil if it is
  /// still running.
  func waitForExit(within timeout: Duration) async -> ProcessExit? {
    _ = await waitUntil(timeout, every: .milliseconds(10)) { hasExited }
    return exit
  }

  /// Waits up to `timeout` for the process to exit, killing it if it
  /// overruns (then ``killed`` is true and the result is the signal).
  @discardableResult
  func finish(within timeout: Duration) async -> ProcessExit {
    if let exit = await waitForExit(within: timeout) { return exit }
    return terminate()
  }

  /// Sends `signal` unless the process has exited.
  func send(signal: Int32) {
    if !hasExited { Glibc.kill(pid, signal) }
  }

  /// Kills the process (SIGKILL) unless it has exited, and reaps it.
  @discardableResult
  func terminate() -> ProcessExit {
    if let exit { return exit }
    if hasExited { return exit! }
    killed = true
    Glibc.kill(pid, SIGKILL)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let result = ProcessExit(waitStatus: status)
    exit = result
    return result
  }

  var standardOutput: String { String(decoding: readWholeFile(outputPath), as: UTF8.self) }
  var standardError: String { String(decoding: readWholeFile(errorPath), as: UTF8.self) }

  /// The messages printed so far in the quoted (-Q) format, one a line.
  /// A line that is not a complete quoted string (say, half written) is
  /// left out.
  var quotedMessages: [String] {
    standardOutput.split(separator: "\n").compactMap { parseQuoted(Array($0.utf8)) }
  }

  var description: String {
    "\(name) \(arguments.joined(separator: " ")) [pid \(pid), \(exit.map { "\($0)" } ?? "running")"
      + "\(killed ? ", killed" : "")] stdout: \(standardOutput.debugDescription) stderr: \(standardError.debugDescription)"
  }
}

/// Decodes one line of nngcat/nanocat `-Q` output: `"..."` with `\n \r \t
/// \" \\` and `\xNN` escapes (nanocat writes a tab as `\x09`).
func parseQuoted(_ line: [UInt8]) -> String? {
  guard line.count >= 2, line.first == UInt8(ascii: "\""), line.last == UInt8(ascii: "\"") else { return nil }
  var bytes: [UInt8] = []
  var i = 1
  let end = line.count - 1
  while i < end {
    let c = line[i]
    guard c == UInt8(ascii: "\\") else {
      bytes.append(c)
      i += 1
      continue
    }
    guard i + 1 < end else { return nil }
    switch line[i + 1] {
    case UInt8(ascii: "n"): bytes.append(0x0a)
    case UInt8(ascii: "r"): bytes.append(0x0d)
    case UInt8(ascii: "t"): bytes.append(0x09)
    case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
    case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
    case UInt8(ascii: "x"):
      guard i + 3 < end, let value = UInt8(String(decoding: line[(i + 2)...(i + 3)], as: UTF8.self), radix: 16)
      else { return nil }
      bytes.append(value)
      i += 2
    default: return nil
    }
    i += 2
  }
  return String(decoding: bytes, as: UTF8.self)
}

func readWholeFile(_ path: String) -> [UInt8] {
  let fd = open(path, O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { return [] }
  defer { close(fd) }
  var data: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 16384)
  while true {
    let n = read(fd, &chunk, chunk.count)
    if n < 0 && errno == EINTR { continue }
    if n <= 0 { break }
    data += chunk[0..<n]
  }
  return data
}

// MARK: - Ports

/// A TCP port on 127.0.0.1 that was free a moment ago: bound to port 0,
/// read back and closed. Another process may take it before the peer
/// does, so peers that listen are started with ``startListeningPeer(_:_:)``.
func unusedPort() throws -> UInt16 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  guard fd >= 0 else { throw InteropFailure("socket: errno \(errno)") }
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = 0
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let ok = withUnsafeMutablePointer(to: &address) { pointer in
    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
      bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
    }
  }
  guard ok else { throw InteropFailure("bind/getsockname: errno \(errno)") }
  return UInt16(bigEndian: address.sin_port)
}

/// True when process `pid` itself holds a TCP socket listening on `port`
/// (from /proc/net/tcp and the process's fd table; nothing connects).
func isListening(pid: pid_t, port: UInt16) -> Bool {
  var inodes: Set<String> = []
  for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
    for line in String(decoding: readWholeFile(table), as: UTF8.self).split(separator: "\n").dropFirst() {
      let fields = line.split(separator: " ")
      guard fields.count > 9, fields[3] == "0A", let local = fields[1].split(separator: ":").last,
        UInt16(local, radix: 16) == port
      else { continue }
      inodes.insert("socket:[\(fields[9])]")
    }
  }
  guard !inodes.isEmpty, let directory = opendir("/proc/\(pid)/fd") else { return false }
  defer { closedir(directory) }
  var link = [CChar](repeating: 0, count: 256)
  while let entry = readdir(directory) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
      String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
    let n = readlink("/proc/\(pid)/fd/\(name)", &link, link.count - 1)
    guard n > 0 else { continue }
    let target = String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if inodes.contains(target) { return true }
  }
  return false
}

/// Starts a peer that listens on `tcp://127.0.0.1:PORT` (the arguments come
/// from `arguments(url)`) and waits until it is listening. If it fails to
/// bind (the port was taken meanwhile) it is retried on another port.
func startListeningPeer(
  _ tool: PeerTool, host: String = "127.0.0.1", _ arguments: (String) -> [String]
) async throws -> (PeerProcess, UInt16) {
  var failures: [String] = []
  for _ in 0..<4 {
    let port = try unusedPort()
    let peer = try PeerProcess(tool, arguments("tcp://\(host):\(port)"))
    let up = await waitUntil(.seconds(5)) { isListening(pid: peer.pid, port: port) || peer.hasExited }
    if up && !peer.hasExited { return (peer, port) }
    peer.terminate()
    failures.append("\(peer)")
  }
  throw InteropFailure("\(tool) never listened:\n" + failures.joined(separator: "\n"))
}
