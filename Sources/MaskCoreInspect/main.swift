// maskcore-inspect: a helper the MaskCore tests run as another process.
//
//   maskcore-inspect inspect FD            print the state of an inherited mask fd
//   maskcore-inspect recv-fd SOCK          receive a mask fd with SCM_RIGHTS, print its state
//   maskcore-inspect wait FD BITS MS       block in poll until BITS are set, print the revents
//   maskcore-inspect emfile BACKEND        lower RLIMIT_NOFILE, create mask fds until refused
//   maskcore-inspect leak BACKEND N        create and close N mask fds, count /proc/self/fd
//
// Output is one line of key=value pairs; the exit status is 0 on success.
import CUserProtoShim
import Glibc
import MaskCore

func underscored(_ text: String) -> String {
  String(text.map { $0 == " " ? "_" : $0 })
}

func fail(_ message: String) -> Never {
  print("error=\(underscored(message))")
  exit(1)
}

func describe(_ state: MaskState) -> String {
  "events=\(state.events.rawValue) data=\(String(state.data, radix: 16))"
}

func backend(_ name: String) -> MaskFD.Backend {
  switch name {
  case "kernel": return .kernel
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

default:
  fail("unknown command \(arguments[1])")
}
