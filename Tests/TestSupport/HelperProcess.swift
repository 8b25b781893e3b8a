import CUserProtoTestShim
import Glibc

/// Runs a helper executable built next to the test binary (SwiftPM puts
/// executable targets beside the test bundle), for checks that need a
/// process of their own: other processes reading a mask fd, fd counting,
/// resource limits, seccomp filters.
public enum HelperProcess {
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  /// The path of executable `name` next to the running test binary.
  public static func path(of name: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    var directory = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while let last = directory.last, last != "/" { directory.removeLast() }
    // The test binary may sit inside an .xctest bundle directory.
    if directory.hasSuffix(".xctest/") {
      directory.removeLast()
      while let last = directory.last, last != "/" { directory.removeLast() }
    }
    return directory + name
  }

  /// Runs `path` with `arguments`, the `(source, target)` fds inherited at
  /// fixed numbers (dup2 onto them clears close-on-exec in the child only),
  /// and `beforeWait` run while the child runs. Returns the exit status (-1
  /// when killed by a signal) and the `key=value` pairs of its output.
  public static func run(
    _ path: String, _ arguments: [String], inheriting mapping: [(Int32, Int32)] = [],
    beforeWait: () throws -> Void = {}
  ) throws -> (status: Int32, values: [String: String]) {
    var pipeFDs: [Int32] = [-1, -1]
    guard up_pipe_cloexec(&pipeFDs) == 0 else { throw Failure(description: "pipe2 failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    for (source, target) in mapping { posix_spawn_file_actions_adddup2(&actions, source, target) }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(pipeFDs[1])
    defer { close(pipeFDs[0]) }
    guard rc == 0 else { throw Failure(description: "posix_spawn \(path) failed: \(rc)") }
    try beforeWait()
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = read(pipeFDs[0], &chunk, chunk.count)
      if n <= 0 { break }
      output += chunk[0..<n]
    }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    var values: [String: String] = [:]
    for field in String(decoding: output, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }) {
      let parts = field.split(separator: "=", maxSplits: 1)
      if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
    }
    return (status & 0x7f == 0 ? (status >> 8) & 0xff : -1, values)
  }
}
