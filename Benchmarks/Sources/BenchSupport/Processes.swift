import Glibc

/// A child process with its standard output on a pipe.
public final class ChildProcess: @unchecked Sendable {
  public let pid: pid_t
  private let output: UnsafeMutablePointer<FILE>

  /// The write end of the child's standard input, when it has one.
  private let input: Int32?

  /// Starts `path` with `arguments` (without argv[0]); its stderr is inherited.
  /// With `tiedInput`, the child's standard input is a pipe that stays open
  /// as long as this process lives: servers exit on its end of file, so
  /// none outlives the benchmark, even when the benchmark is killed.
  public init(_ path: String, _ arguments: [String], tiedInput: Bool = false) throws(ProcessError) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { throw ProcessError("pipe failed: \(errno)") }
    for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var inputFDs: [Int32] = [-1, -1]
    if tiedInput {
      guard pipe(&inputFDs) == 0 else { throw ProcessError("pipe failed: \(errno)") }
      for fd in inputFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    if tiedInput { posix_spawn_file_actions_adddup2(&actions, inputFDs[0], 0) }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var child = pid_t()
    let rc = posix_spawn(&child, path, &actions, nil, argv, environ)
    Glibc.close(pipeFDs[1])
    if tiedInput { Glibc.close(inputFDs[0]) }
    guard rc == 0 else {
      Glibc.close(pipeFDs[0])
      if tiedInput { Glibc.close(inputFDs[1]) }
      throw ProcessError("posix_spawn \(path) failed: \(rc)")
    }
    input = tiedInput ? inputFDs[1] : nil
    pid = child
    output = fdopen(pipeFDs[0], "r")
  }

  /// The next line of the child's standard output, nil at end of file.
  public func readLine() -> String? {
    var line: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0
    defer { free(line) }
    let n = getline(&line, &capacity, output)
    guard n > 0, let line else { return nil }
    var text = String(cString: line)
    while text.last == "\n" { text.removeLast() }
    return text
  }

  /// Everything left on the child's standard output.
  public func readAll() -> String {
    var lines: [String] = []
    while let line = readLine() { lines.append(line) }
    return lines.joined(separator: "\n")
  }

  /// Waits for the child; returns its exit status (or 128 + signal).
  @discardableResult
  public func wait() -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    fclose(output)
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
  }

  /// Sends SIGTERM and waits.
  public func terminate() {
    if let input { Glibc.close(input) }
    kill(pid, SIGTERM)
    wait()
  }

  /// Runs a command to completion and returns its output and status.
  public static func run(_ path: String, _ arguments: [String]) throws(ProcessError) -> (String, Int32) {
    let child = try ChildProcess(path, arguments)
    let text = child.readAll()
    return (text, child.wait())
  }
}

public struct ProcessError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// The directory holding this executable (SwiftPM puts every product of a
/// configuration in one directory).
public func executableDirectory() -> String {
  var buffer = [CChar](repeating: 0, count: 4096)
  let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
  precondition(n > 0, "readlink /proc/self/exe")
  let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}

/// CPU time (user + system) of every thread of this process so far, in ns.
public func processCPUNanoseconds() -> UInt64 {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  let user = UInt64(usage.ru_utime.tv_sec) * 1_000_000_000 + UInt64(usage.ru_utime.tv_usec) * 1000
  let system = UInt64(usage.ru_stime.tv_sec) * 1_000_000_000 + UInt64(usage.ru_stime.tv_usec) * 1000
  return user + system
}

/// Writes a line to standard error (unbuffered, no shared FILE state).
public func logLine(_ text: String) {
  let line = text + "\n"
  _ = line.withCString { write(2, $0, strlen($0)) }
}

/// Flushes standard output (every C stream).
public func flushOutput() { fflush(nil) }

/// Exits the process when its standard input, a pipe, reaches end of file
/// (the benchmark that started it is gone). For servers started with
/// `tiedInput`; does nothing when standard input is not a pipe.
public func exitWhenInputCloses() {
  var info = stat()
  guard fstat(0, &info) == 0, info.st_mode & S_IFMT == S_IFIFO else { return }
  detachThread {
    var byte: UInt8 = 0
    while true {
      let n = read(0, &byte, 1)
      if n == 0 || (n < 0 && errno != EINTR) { exit(0) }
    }
  }
}
