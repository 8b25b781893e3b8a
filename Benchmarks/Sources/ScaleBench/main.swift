// ScaleBench: many mask fds (and many ProtocolSockets) in one process.
//
// For each mask backend available here (eventfd as the baseline, the
// emulation's pair and full layouts, the kernel's EFD_MASK when the probe
// finds it) and each count, a fresh child process raises RLIMIT_NOFILE to
// /proc/sys/fs/nr_open (soft and hard; needs root above the hard limit),
// creates COUNT objects and measures:
//   - fds per object: /proc/self/fd entries before and after;
//   - kernel memory per object: the delta of /proc/meminfo's Slab
//     (SUnreclaim + SReclaimable) and PageTables, and the slab caches that
//     grew most (/proc/slabinfo, objects x object size);
//   - user memory per object: the delta of RSS (/proc/self/statm);
//   - creation time per object (all of them, and the first and last 10%);
//   - epoll: registration time per fd (all in one epoll set,
//     level-triggered EPOLLIN); then, TRIALS times, make one object chosen
//     at random readable and time (a) the transition plus epoll_wait
//     returning it and (b) epoll_wait alone, after the transition.
// Sockets (`--sockets`): COUNT ProtocolSockets as COUNT/2 in-memory pairs
// (makeSocketPair) on one event loop, with the mask backend forced through
// MASKCORE_BACKEND; "detect" is a message sent by the peer from the
// application thread until the application's epoll_wait returns the
// receiving socket's fd (a hop through the loop thread).
//
//   ScaleBench [--quick] [--counts 1000,10000,100000] [--backends eventfd,pair,full,kernel] [--sockets] [--trials N]
//
// One line per measurement ("scale kind=... key=value ..."), then Markdown tables.
import BenchSupport
import CUserProtoShim
import Glibc
import MaskCore
import UserProto

let arguments = BenchArguments()

// MARK: Process facts

func readFile(_ path: String) -> String {
  guard let f = fopen(path, "r") else { return "" }
  defer { fclose(f) }
  var out = [UInt8]()
  var buffer = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = fread(&buffer, 1, buffer.count, f)
    if n <= 0 { break }
    out += buffer[0..<n]
  }
  return String(decoding: out, as: UTF8.self)
}

/// /proc/meminfo in bytes.
func meminfo() -> [String: Int] {
  var fields: [String: Int] = [:]
  for line in readFile("/proc/meminfo").split(separator: "\n") {
    let parts = line.split(whereSeparator: { $0 == ":" || $0 == " " })
    if parts.count >= 2, let v = Int(parts[1]) { fields[String(parts[0])] = v * 1024 }
  }
  return fields
}

/// Bytes held by each slab cache (active objects x object size).
func slabinfo() -> [String: Int] {
  var caches: [String: Int] = [:]
  for line in readFile("/proc/slabinfo").split(separator: "\n").dropFirst(2) {
    let p = line.split(separator: " ", omittingEmptySubsequences: true)
    if p.count >= 4, let active = Int(p[1]), let size = Int(p[3]) { caches[String(p[0])] = active * size }
  }
  return caches
}

func openDescriptors() -> Int {
  guard let dir = opendir("/proc/self/fd") else { return -1 }
  defer { closedir(dir) }
  var n = 0
  while let e = readdir(dir) {
    let first = withUnsafeBytes(of: e.pointee.d_name) { $0[0] }
    if first != UInt8(ascii: ".") { n += 1 }
  }
  return n - 1  // the directory's own fd
}

func residentBytes() -> Int {
  let fields = readFile("/proc/self/statm").split(separator: " ")
  guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
  return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Raises RLIMIT_NOFILE (soft and hard) to fs.nr_open; returns the limit.
func raiseDescriptorLimit() -> Int {
  let nrOpen = Int(readFile("/proc/sys/fs/nr_open").split(separator: "\n").first ?? "") ?? 1_048_576
  var limit = rlimit(rlim_cur: rlim_t(nrOpen), rlim_max: rlim_t(nrOpen))
  if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) != 0 {
    logLine("ScaleBench: setrlimit(RLIMIT_NOFILE, \(nrOpen)) failed: errno \(errno)")
  }
  getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
  return Int(limit.rlim_cur)
}

func kernelRelease() -> String {
  var uts = utsname()
  uname(&uts)
  return withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

// MARK: One measurement (child process)

/// What a "readable" object is for the detection trials.
struct Subject {
  var fds: [Int32]
  var raise: (Int) -> Void
  var clear: (Int) -> Void
}

final class Measurement {
  var values: [(String, String)] = []
  func add(_ key: String, _ value: String) { values.append((key, value)) }
  func add(_ key: String, _ value: Double, _ digits: Int = 1) { add(key, fixed(value, digits)) }
}

func runChild(kind: String, backend: String, count: Int, trials: Int) throws {
  let limit = raiseDescriptorLimit()
  let m = Measurement()
  m.add("kind", kind)
  m.add("backend", backend)
  m.add("count", String(count))
  m.add("kernel", kernelRelease())
  m.add("nofile_limit", String(limit))
  // Settle: the first mask runs a self-check, the first loop starts threads.
  var keep: [AnyObject] = []
  var eventfds: [Int32] = []
  var masks: [MaskFD] = []
  var sockets: [ProtocolSocket] = []
  var loop: UserProto.EventLoop? = nil
  let maskBackend: MaskFD.BackendChoice =
    switch backend {
    case "kernel": .kernel
    case "full": .emulation(.full)
    default: .emulation(.pair)
    }
  if kind == "sockets" {
    setenv("MASKCORE_BACKEND", backend, 1)
    loop = try UserProto.EventLoop(configuration: .init(backend: .automatic, name: "scale-loop"))
    let (a, b) = try makeSocketPair(ProtocolSocket.self, loop: loop!)
    keep += [a, b]
  } else if backend != "eventfd" {
    keep.append(try MaskFD(backend: maskBackend))
  }
  sleepSeconds(0.2)
  let fds0 = openDescriptors()
  let mem0 = meminfo()
  let slab0 = slabinfo()
  let rss0 = residentBytes()
  let tenth = max(1, count / 10)
  var firstTenth: UInt64 = 0
  var lastTenthStart: UInt64 = 0
  let t0 = nowNanoseconds()
  var failure: String? = nil
  for i in 0..<count {
    if i == tenth { firstTenth = nowNanoseconds() - t0 }
    if i == count - tenth { lastTenthStart = nowNanoseconds() }
    do {
      switch (kind, backend) {
      case ("masks", "eventfd"):
        let fd = up_eventfd2(0, up_EFD_CLOEXEC | up_EFD_NONBLOCK)
        if fd < 0 { throw ProcessError("eventfd2: errno \(errno)") }
        eventfds.append(fd)
      case ("masks", _):
        masks.append(try MaskFD(backend: maskBackend))
      default:
        if i % 2 == 0 {
          let (a, b) = try makeSocketPair(ProtocolSocket.self, loop: loop!)
          sockets += [a, b]
        }
      }
    } catch {
      failure = "after \(i) objects: \(error)"
      break
    }
  }
  let t1 = nowNanoseconds()
  if failure != nil {
    // Out of descriptors: give a few back so that /proc and epoll work.
    for _ in 0..<8 {
      if kind == "sockets" {
        if sockets.count >= 2 {
          sockets.removeLast().abort()
          sockets.removeLast().abort()
        }
      } else if backend == "eventfd" {
        if let fd = eventfds.popLast() { close(fd) }
      } else if let mask = masks.popLast() {
        try? mask.close()
      }
    }
  }
  let created = kind == "sockets" ? sockets.count : (backend == "eventfd" ? eventfds.count : masks.count)
  if kind == "sockets" { sleepSeconds(0.5) }  // attach runs on the loop
  let fds1 = openDescriptors()
  let mem1 = meminfo()
  let slab1 = slabinfo()
  let rss1 = residentBytes()
  m.add("created", String(created))
  if let failure { m.add("failure", "\"\(failure)\"") }
  let n = Double(max(created, 1))
  m.add("fds_per", Double(fds1 - fds0) / n, 2)
  func delta(_ key: String) -> Double { Double((mem1[key] ?? 0) - (mem0[key] ?? 0)) / n }
  m.add("slab_per_bytes", delta("Slab"), 0)
  m.add("sunreclaim_per_bytes", delta("SUnreclaim"), 0)
  m.add("sreclaimable_per_bytes", delta("SReclaimable"), 0)
  m.add("pagetables_per_bytes", delta("PageTables"), 0)
  m.add("memfree_drop_per_bytes", -delta("MemFree"), 0)
  m.add("rss_per_bytes", Double(rss1 - rss0) / n, 0)
  let grown = slab1.map { ($0.key, $0.value - (slab0[$0.key] ?? 0)) }.filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
  m.add("top_slabs", "\"" + grown.prefix(6).map { "\($0.0):\(Int(Double($0.1) / n))" }.joined(separator: ",") + "\"")
  m.add("create_ns_per", Double(t1 - t0) / n, 0)
  if count >= 10 && created == count {
    m.add("create_first10pct_ns_per", Double(firstTenth) / Double(tenth), 0)
    m.add("create_last10pct_ns_per", Double(t1 - lastTenthStart) / Double(tenth), 0)
  }

  // One epoll set holding every object.
  var raiseErrors: [String] = []
  let subject: Subject
  switch (kind, backend) {
  case ("masks", "eventfd"):
    subject = Subject(
      fds: eventfds,
      raise: { i in
        var one: UInt64 = 1
        _ = write(eventfds[i], &one, 8)
      },
      clear: { i in
        var v: UInt64 = 0
        _ = read(eventfds[i], &v, 8)
      })
  case ("masks", _):
    subject = Subject(
      fds: masks.map(\.fileDescriptor),
      raise: { i in
        do { try masks[i].set([.readable]) } catch { raiseErrors.append("\(error)") }
      },
      clear: { i in
        do { try masks[i].set([]) } catch { raiseErrors.append("\(error)") }
      })
  default:
    // A socket is writable at rest; the set watches POLLIN only. Even
    // sockets send to their odd peers and back.
    let payload: [UInt8] = [1, 2, 3, 4]
    subject = Subject(
      fds: sockets.map(\.fileDescriptor),
      raise: { i in _ = try? sockets[i ^ 1].trySend(payload) },
      clear: { i in _ = try? sockets[i].tryReceive() })
  }
  let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
  let r0 = nowNanoseconds()
  for (i, fd) in subject.fds.enumerated() {
    var ev = epoll_event()
    ev.events = EPOLLIN.rawValue
    ev.data.u64 = UInt64(i)
    if epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 {
      m.add("epoll_failure", "\"epoll_ctl ADD failed at \(i): errno \(errno)\"")
      break
    }
  }
  let r1 = nowNanoseconds()
  m.add("epoll_add_ns_per", Double(r1 - r0) / n, 0)
  var events = [epoll_event](repeating: epoll_event(), count: 64)
  // Nothing ready: epoll_wait with a zero timeout.
  var idle = Samples(reserving: trials)
  for _ in 0..<trials {
    let a = nowNanoseconds()
    let k = epoll_wait(ep, &events, 64, 0)
    idle.add(nowNanoseconds() - a)
    precondition(k == 0, "epoll_wait found \(k) ready objects at rest")
  }
  var detect = Samples(reserving: trials)
  var waitOnly = Samples(reserving: trials)
  var rng = SystemRandomNumberGenerator()
  var wrong = 0
  var lost = 0
  for _ in 0..<trials {
    let i = Int.random(in: 0..<subject.fds.count, using: &rng)
    let a = nowNanoseconds()
    subject.raise(i)
    let b = nowNanoseconds()
    var k: Int32 = 0
    var waited = 0
    repeat {
      k = epoll_wait(ep, &events, 64, 1000)
      waited += 1
    } while k == 0 && waited < 10
    if k == 0 {
      // Nothing in 10 s: a lost wake-up (or a raise that failed). Count it
      // and go on rather than hang.
      lost += 1
      subject.clear(i)
      continue
    }
    let c = nowNanoseconds()
    if k != 1 || events[0].data.u64 != UInt64(i) { wrong += 1 }
    detect.add(c - a)
    waitOnly.add(c - b)
    subject.clear(i)
  }
  let (dp50, dp99) = detect.p50p99
  let (wp50, wp99) = waitOnly.p50p99
  let (ip50, _) = idle.p50p99
  m.add("trials", String(trials))
  m.add("wrong_wakeups", String(wrong))
  m.add("lost_wakeups", String(lost))
  if let first = raiseErrors.first {
    m.add("raise_errors", String(raiseErrors.count))
    m.add("first_raise_error", "\"\(first)\"")
  }
  m.add("idle_wait_p50_ns", ip50, 0)
  m.add("detect_p50_ns", dp50, 0)
  m.add("detect_p99_ns", dp99, 0)
  m.add("wait_p50_ns", wp50, 0)
  m.add("wait_p99_ns", wp99, 0)
  print("scale " + m.values.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
  flushOutput()
  _ = keep
  exit(0)  // the kernel closes everything
}

func sleepSeconds(_ s: Double) {
  var t = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
  var rest = timespec()
  while nanosleep(&t, &rest) < 0 && errno == EINTR { t = rest }
}

// MARK: Parent: one child per (kind, backend, count), then tables

if arguments.string("--child") != nil {
  let kind = arguments.string("--child")!
  try runChild(
    kind: kind, backend: arguments.string("--backend") ?? "pair", count: arguments.int("--count", default: 1000),
    trials: arguments.int("--trials", default: 1000))
}

let quick = arguments.quick
let counts = (arguments.string("--counts") ?? (quick ? "1000,10000" : "1000,10000,100000"))
  .split(separator: ",").compactMap { Int($0) }
var backends = (arguments.string("--backends") ?? "eventfd,pair,full,kernel").split(separator: ",").map(String.init)
if !KernelProbe.current.isAvailable && backends.contains("kernel") {
  backends.removeAll { $0 == "kernel" }
  print("kernel backend: not available here (\(KernelProbe.current)); run in the EFD_MASK guest for it\n")
}
let trials = arguments.int("--trials", default: quick ? 200 : 1000)
let limit = raiseDescriptorLimit()
print("ScaleBench: \(machineSummary()); RLIMIT_NOFILE raised to \(limit) (fs.nr_open)\n")
let exe = executableDirectory() + "/ScaleBench"
var lines: [[String: String]] = []
func parse(_ line: String) -> [String: String] {
  var out: [String: String] = [:]
  var key = ""
  var value = ""
  var inKey = true
  var quoted = false
  for ch in line.dropFirst("scale ".count) + " " {
    if inKey {
      if ch == "=" { inKey = false } else if ch != " " { key.append(ch) }
    } else if ch == "\"" {
      quoted.toggle()
    } else if ch == " " && !quoted {
      out[key] = value
      key = ""
      value = ""
      inKey = true
    } else {
      value.append(ch)
    }
  }
  return out
}
var jobs: [(String, String, Int)] = []
for backend in backends { for count in counts { jobs.append(("masks", backend, count)) } }
if arguments.arguments.contains("--sockets") {
  for backend in backends where backend != "eventfd" {
    for count in counts { jobs.append(("sockets", backend, count)) }
  }
}
for (kind, backend, wanted) in jobs {
  // Below RLIMIT_NOFILE: leave room for the loop, epoll and /proc.
  let perObject = backend == "full" ? 3 : (backend == "pair" ? 2 : 1)
  let feasible = (limit - 256) / perObject / 2 * 2
  let count = min(wanted, feasible)
  if count < wanted {
    print(
      "scale: \(kind) \(backend) \(wanted) needs \(wanted * perObject) fds, above RLIMIT_NOFILE \(limit): measuring \(count)"
    )
  }
  let child = try ChildProcess(
    exe, ["--child", kind, "--backend", backend, "--count", String(count), "--trials", String(trials)])
  var got = false
  while let line = child.readLine() {
    print(line)
    flushOutput()
    if line.hasPrefix("scale ") {
      var fields = parse(line)
      if count < wanted { fields["capped_from"] = String(wanted) }
      lines.append(fields)
      got = true
    }
  }
  let status = child.wait()
  if !got || status != 0 {
    print("scale kind=\(kind) backend=\(backend) count=\(count) failure=\"child exited with status \(status)\"")
  }
}

// MARK: Tables

print("")
func v(_ l: [String: String], _ k: String) -> String { l[k] ?? "-" }
func d(_ l: [String: String], _ k: String) -> Double { Double(l[k] ?? "") ?? .nan }
/// The count measured, with the count asked for when RLIMIT_NOFILE capped it.
func shown(_ l: [String: String]) -> String {
  v(l, "created") + (l["capped_from"].map { " (asked \($0))" } ?? "")
}
print("### Per object\n")
printTable(
  [
    "kind", "backend", "count", "fds each", "kernel slab B each", "page tables B each", "user RSS B each",
    "create us each", "first 10% / last 10%", "epoll_ctl ADD ns each", "top slab caches (B each)",
  ],
  lines.map { l in
    [
      v(l, "kind"), v(l, "backend"), shown(l), v(l, "fds_per"), v(l, "slab_per_bytes"),
      v(l, "pagetables_per_bytes"), v(l, "rss_per_bytes"), fixed(d(l, "create_ns_per") / 1000, 2),
      fixed(d(l, "create_first10pct_ns_per") / 1000, 2) + " / " + fixed(d(l, "create_last10pct_ns_per") / 1000, 2),
      v(l, "epoll_add_ns_per"), v(l, "top_slabs"),
    ]
  })
print("### Finding the one readable object with epoll_wait\n")
func base(_ l: [String: String], _ lines: [[String: String]], _ counts: [Int]) -> [String: String]? {
  lines.first { $0["kind"] == l["kind"] && $0["backend"] == l["backend"] && $0["count"] == String(counts.min() ?? 0) }
}
printTable(
  [
    "kind", "backend", "count", "raise + epoll_wait p50 ns", "p99 ns", "epoll_wait alone p50 ns", "p99 ns",
    "p50 vs smallest count", "idle epoll_wait ns", "wrong wake-ups",
  ],
  lines.map { l in
    [
      v(l, "kind"), v(l, "backend"), shown(l), v(l, "detect_p50_ns"), v(l, "detect_p99_ns"),
      v(l, "wait_p50_ns"), v(l, "wait_p99_ns"),
      base(l, lines, counts).map { ratio(d(l, "detect_p50_ns") / d($0, "detect_p50_ns")) } ?? "-",
      v(l, "idle_wait_p50_ns"), v(l, "wrong_wakeups"),
    ]
  })
for l in lines where l["failure"] != nil {
  print("- \(v(l, "kind")) \(v(l, "backend")) \(v(l, "count")): \(v(l, "failure"))")
}
