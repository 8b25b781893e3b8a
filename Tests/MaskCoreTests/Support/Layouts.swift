import CUserProtoShim
import Glibc
import MaskCore
import Testing

/// The emulation layouts, which every stock kernel has. The kernel backend
/// runs the same test bodies in `KernelBackendTests`, a suite that is skipped
/// with the probe's reason where the kernel lacks EFD_MASK.
let emulationLayouts: [MaskLayout] = EmulationLayout.allCases.map { .emulation($0) }

/// True when the kernel backend must be tested: it is available, or the
/// environment demands it (`MASKCORE_EXPECT_KERNEL=1`, in the QEMU guest).
let kernelUnderTest = KernelProbe.current.isAvailable || getenv("MASKCORE_EXPECT_KERNEL") != nil

func backendChoice(_ layout: MaskLayout) -> MaskFD.Backend {
  switch layout {
  case .kernel: .kernel
  case .emulation(let emulation): .emulation(emulation)
  }
}

/// Creates a mask fd on exactly `layout`.
func makeMask(_ layout: MaskLayout, options: MaskFD.Options = [.closeOnExec]) throws -> MaskFD {
  return try MaskFD(backend: backendChoice(layout), usage: .anyEvents, options: options)
}

/// The helper executable built next to the test bundle.
func helperPath() -> String {
  if let override = getenv("MASKCORE_INSPECT") { return String(cString: override) }
  var buffer = [CChar](repeating: 0, count: 4096)
  let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
  let exe = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  var directory = exe
  while let last = directory.last, last != "/" { directory.removeLast() }
  // The test binary may sit inside an .xctest bundle directory.
  if directory.hasSuffix(".xctest/") {
    directory.removeLast()
    while let last = directory.last, last != "/" { directory.removeLast() }
  }
  return directory + "maskcore-inspect"
}

/// Runs the helper with `mapping` fds inherited at the given numbers and
/// returns its exit status and its stdout's key=value pairs.
func runHelper(_ arguments: [String], inheriting mapping: [(Int32, Int32)] = [], beforeWait: () throws -> Void = {})
  throws -> (status: Int32, values: [String: String])
{
  var pipeFDs: [Int32] = [-1, -1]
  #expect(up_pipe_cloexec(&pipeFDs) == 0)
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
  for (source, target) in mapping {
    // dup2 onto a fixed number clears close-on-exec in the child only.
    posix_spawn_file_actions_adddup2(&actions, source, target)
  }
  let path = helperPath()
  let argv = ([path] + arguments).map { strdup($0) } + [nil]
  defer { for p in argv { free(p) } }
  var pid = pid_t()
  let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
  close(pipeFDs[1])
  defer { close(pipeFDs[0]) }
  try #require(rc == 0, "posix_spawn \(path) failed: \(rc)")
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
  let exited = status & 0x7f == 0
  return (exited ? (status >> 8) & 0xff : -1, values)
}
