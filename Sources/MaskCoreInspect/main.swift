// maskcore-inspect: a helper the MaskCore tests run as another process.
//
//   maskcore-inspect inspect FD            print the state of an inherited mask fd
//   maskcore-inspect recv-fd SOCK          receive a mask fd with SCM_RIGHTS, print its state
//   maskcore-inspect wait FD BITS MS       block in poll until BITS are set, print the revents
//   maskcore-inspect emfile BACKEND        lower RLIMIT_NOFILE, create mask fds until refused
//   maskcore-inspect leak BACKEND N        create and close N mask fds, count /proc/self/fd
//   maskcore-inspect count BACKEND N       create N mask fds: fds each, all close-on-exec?
//   maskcore-inspect fork BACKEND          a mask fd across fork(): what the child may do
//
// Output is one line of key=value pairs; the exit status is 0 on success.
import CUserProtoTestShim
import Glibc
import MaskCore

func underscored(_ text: String) -> String {
  String(text.map { $0 == " " ? "_" : $0 })
}

func fail(_ message: String) -> Never {
  print("error=\(underscored(message))")
  exit(1)
}

func describe(_ state: MaskState, prefix: String = "") -> String {
  "\(prefix)events=\(state.events.rawValue) \(prefix)data=\(String(state.data, radix: 16))"
}

func backend(_ name: String) -> MaskFD.BackendChoice {
  switch name {
  case "kernel": return .kernel
  case "module": return .module
  case "pair": return .emulation(.pair)
  case "full": return .emulation(.full)
  default: fail("unknown backend \(name)")
  }
}

func openDescriptorCount() -> Int {
  guard let dir = opendir("/proc/self/fd") else { fail("opendir") }
  defer { closedir(dir) }
  var count = 0
  while let entry = readdir(dir) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    if name != "." && name != ".." { count += 1 }
  }
  return count - 1  // the directory stream's own fd
}

func openDescriptors() -> [Int32] {
  guard let dir = opendir("/proc/self/fd") else { fail("opendir") }
  let own = dirfd(dir)
  defer { closedir(dir) }
  var fds: [Int32] = []
  while let entry = readdir(dir) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    if let fd = Int32(name), fd != own { fds.append(fd) }
  }
  return fds
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else { fail("usage") }

switch arguments[1] {
case "inspect":
  guard let fd = Int32(arguments[2]) else { fail("bad fd") }
  do { print(describe(try MaskFD.inspect(descriptor: fd))) } catch { fail("\(error)") }

case "recv-fd":
  guard let sock = Int32(arguments[2]) else { fail("bad fd") }
  let fd = up_recv_fd(sock)
  if fd < 0 { fail("recv_fd errno \(-fd)") }
  do { print(describe(try MaskFD.inspect(descriptor: fd))) } catch { fail("\(error)") }
  _ = close(fd)

case "wait":
  guard arguments.count == 5, let fd = Int32(arguments[2]), let bits = Int16(arguments[3]),
    let ms = Int32(arguments[4])
  else { fail("usage") }
  var entry = pollfd(fd: fd, events: bits, revents: 0)
  let n = poll(&entry, 1, ms)
  print("ready=\(n) revents=\(UInt16(bitPattern: entry.revents) & 0x1f)")

case "emfile":
  let choice = backend(arguments[2])
  var limit = rlimit(rlim_cur: 16, rlim_max: 16)
  guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { fail("setrlimit") }
  var masks: [MaskFD] = []
  while true {
    do {
      masks.append(try MaskFD(backend: choice))
      if masks.count > 64 { fail("never refused") }
    } catch {
      // The ones created before still work after the refusal.
      do {
        for mask in masks { try mask.set([.readable, .writable], data: 7) }
        let ok = try masks.allSatisfy { try $0.readBack() == MaskState(events: [.readable, .writable], data: 7) }
        print(
          "created=\(masks.count) limit=\(error.isDescriptorLimit) others_ok=\(ok) message=\(underscored("\(error)"))")
      } catch {
        fail("after refusal: \(error)")
      }
      exit(0)
    }
  }

case "leak":
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice = backend(arguments[2])
  let before = openDescriptorCount()
  do {
    for i in 0..<n {
      let mask = try MaskFD(backend: choice)
      if i % 2 == 0 { try mask.set([.readable, .writable], data: UInt64(i)) }
      try mask.close()
    }
  } catch { fail("\(error)") }
  let after = openDescriptorCount()
  print("before=\(before) after=\(after)")

case "count":
  guard arguments.count == 4, let n = Int(arguments[3]), n > 0 else { fail("usage") }
  let choice = backend(arguments[2])
  let before = Set(openDescriptors())
  var masks: [MaskFD] = []
  do {
    for _ in 0..<n { masks.append(try MaskFD(backend: choice)) }
    // POLLERR names the emulation's sockets: still no new fd.
    for mask in masks { try mask.set([.writable, .error]) }
  } catch { fail("\(error)") }
  let added = Set(openDescriptors()).subtracting(before)
  let cloexec = added.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC != 0 }
  print(
    "added=\(added.count) each=\(Double(added.count) / Double(n)) declared=\(masks[0].descriptorCount) all_cloexec=\(cloexec)"
  )

case "fork":
  let choice = backend(arguments[2])
  do {
    let mask = try MaskFD(backend: choice)
    try mask.set([.readable, .writable], data: 0xfeed)
    fflush(nil)
    let child = fork()
    if child < 0 { fail("fork") }
    if child == 0 {
      var refused = "none"
      do { try mask.set([]) } catch { refused = "\(error == .forkedChild)" }
      var inspected = "child_inspect=failed"
      do {
        inspected = describe(try MaskFD.inspect(descriptor: mask.fileDescriptor), prefix: "child_")
      } catch { inspected = "child_inspect=\(underscored("\(error)"))" }
      print("child_refused=\(refused) \(inspected)")
      fflush(nil)
      _exit(0)
    }
    var status: Int32 = 0
    _ = waitpid(child, &status, 0)
    try mask.set([.writable], data: 0xbeef)
    print("child_status=\(status) \(describe(try mask.readBack(), prefix: "parent_"))")
  } catch { fail("\(error)") }

default:
  fail("unknown command \(arguments[1])")
}
