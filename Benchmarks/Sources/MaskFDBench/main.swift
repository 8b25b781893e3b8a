// MaskFDBench: per-transition cost and wake latency of every mask fd backend
// available here, against eventfd, measured in the same run.
//
//   swift run -c release --package-path Benchmarks MaskFDBench [--quick]
//
// Prints a Markdown table of medians and ratios to eventfd.
import CUserProtoShim
import Dispatch
import Glibc
import MaskCore

let quick = CommandLine.arguments.contains("--quick")
let rounds = quick ? 5 : 15
let iterations = quick ? 5_000 : 20_000
let wakeRounds = quick ? 3 : 7
let wakeTrips = quick ? 5_000 : 20_000

@inline(__always) func now() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  return sorted[sorted.count / 2]
}

func percentile(_ values: [Double], _ p: Double) -> Double {
  let sorted = values.sorted()
  return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Median ns per call of `body` (one call = one on+off pair) over rounds.
func measure(_ body: () throws -> Void) rethrows -> Double {
  var samples: [Double] = []
  for _ in 0..<rounds {
    let start = now()
    for _ in 0..<iterations { try body() }
    samples.append(Double(now() - start) / Double(iterations))
  }
  return median(samples)
}

// MARK: Baseline: eventfd

let efd = eventfdFlags()
func eventfdFlags() -> Int32 { up_eventfd2(0, up_EFD_CLOEXEC | up_EFD_NONBLOCK) }
var one: UInt64 = 1
var sink: UInt64 = 0
let eventfdPair = measure {
  _ = write(efd, &one, 8)
  _ = read(efd, &sink, 8)
}

// MARK: Mask fd transitions

var available: [MaskLayout] = [.emulation(.pair), .emulation(.full)]
if KernelProbe.current.isAvailable { available.insert(.kernel, at: 0) }
if ModuleProbe.current.isAvailable { available.insert(.module, at: available.firstIndex(of: .emulation(.pair)) ?? 0) }

struct Row {
  var name: String
  var nanoseconds: Double
}

var rows: [(MaskLayout, [Row])] = []
for layout in available {
  let backend: MaskFD.BackendChoice =
    switch layout {
    case .kernel: .kernel
    case .module: .module
    case .emulation(let e): .emulation(e)
    }
  let mask = try MaskFD(backend: backend, usage: .anyEvents)
  var results: [Row] = []
  try mask.set([.writable])
  results.append(
    Row(
      name: "POLLIN on+off",
      nanoseconds: try measure {
        try mask.set([.readable, .writable])
        try mask.set([.writable])
      }))
  try mask.set([])
  results.append(
    Row(
      name: "POLLOUT on+off",
      nanoseconds: try measure {
        try mask.set([.writable])
        try mask.set([])
      }))
  results.append(
    Row(
      name: "POLLIN+POLLOUT on+off",
      nanoseconds: try measure {
        try mask.set([.readable, .writable])
        try mask.set([])
      }))
  if layout.fidelity([.error, .writable]) != .unsupported {
    try mask.set([.writable])
    results.append(
      Row(
        name: "POLLERR on+off",
        nanoseconds: try measure {
          try mask.set([.writable, .error])
          try mask.set([.writable])
        }))
  }
  try mask.set([.writable])
  results.append(
    Row(
      name: "unchanged set (no syscall)",
      nanoseconds: try measure {
        try mask.set([.writable])
        try mask.set([.writable])
      }))
  rows.append((layout, results))
  try mask.close()
}

// MARK: Wake latency: ping-pong between two threads blocked in epoll_wait

/// One round of ping-pong between two threads blocked in epoll_wait: each,
/// when woken, clears its own fd and signals the other's. Returns the mean
/// one-way wake latency of the round in ns.
func pingPongRound(
  signalPing: @escaping @Sendable () -> Void, clearPing: @escaping @Sendable () -> Void, pingFD: Int32,
  signalPong: @escaping @Sendable () -> Void, clearPong: @escaping @Sendable () -> Void, pongFD: Int32
) -> Double {
  func epollFor(_ fd: Int32) -> Int32 {
    let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
    var ev = epoll_event()
    ev.events = EPOLLIN.rawValue
    _ = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)
    return ep
  }
  let pingEp = epollFor(pingFD)
  let pongEp = epollFor(pongFD)
  defer {
    close(pingEp)
    close(pongEp)
  }
  let done = DispatchSemaphore(value: 0)
  let trips = wakeTrips
  Thread.detach {
    var ev = epoll_event()
    for _ in 0..<trips {
      while epoll_wait(pongEp, &ev, 1, -1) != 1 {}
      clearPong()
      signalPing()
    }
    done.signal()
  }
  var ev = epoll_event()
  let start = now()
  for _ in 0..<trips {
    signalPong()
    while epoll_wait(pingEp, &ev, 1, -1) != 1 {}
    clearPing()
  }
  let elapsed = now() - start
  done.wait()
  return Double(elapsed) / Double(trips) / 2
}

enum Thread {
  static func detach(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
      let body: @Sendable () -> Void
      init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var handle = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    pthread_create(
      &handle, nil,
      { raw in
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
      }, box)
    pthread_detach(handle)
  }
}

/// A pair of fds to ping-pong on, with how to set and clear each.
struct WakeSubject: Sendable {
  var name: String
  var ping: Int32
  var pong: Int32
  var signal: @Sendable (Int) -> Void
  var clear: @Sendable (Int) -> Void
}

let efdPing = eventfdFlags()
let efdPong = eventfdFlags()
let eventfdFDs = [efdPing, efdPong]
var subjects = [
  WakeSubject(
    name: "eventfd", ping: efdPing, pong: efdPong,
    signal: { i in
      var v: UInt64 = 1
      _ = write(eventfdFDs[i], &v, 8)
    },
    clear: { i in
      var v: UInt64 = 0
      _ = read(eventfdFDs[i], &v, 8)
    })
]
var wakeMasks: [MaskFD] = []
for layout in available {
  let backend: MaskFD.BackendChoice =
    switch layout {
    case .kernel: .kernel
    case .module: .module
    case .emulation(let e): .emulation(e)
    }
  let pair = [try MaskFD(backend: backend), try MaskFD(backend: backend)]
  wakeMasks += pair
  subjects.append(
    WakeSubject(
      name: "mask fd, \(layout)", ping: pair[0].fileDescriptor, pong: pair[1].fileDescriptor,
      signal: { i in try? pair[i].set([.readable]) }, clear: { i in try? pair[i].set([]) }))
}
// Rounds alternate between subjects so that the VM's state (idle vCPUs wake
// slowly) affects every subject alike; medians of the round means.
var wakeSamples = [[Double]](repeating: [], count: subjects.count)
for _ in 0..<wakeRounds {
  for (i, subject) in subjects.enumerated() {
    let s = subject
    wakeSamples[i].append(
      pingPongRound(
        signalPing: { s.signal(0) }, clearPing: { s.clear(0) }, pingFD: s.ping,
        signalPong: { s.signal(1) }, clearPong: { s.clear(1) }, pongFD: s.pong))
  }
}
for mask in wakeMasks { try mask.close() }

// MARK: Report

func f(_ ns: Double) -> String { String(Int(ns.rounded())) }
func r(_ x: Double) -> String {
  let hundredths = Int((x * 100).rounded())
  return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)x"
}

var uts = utsname()
uname(&uts)
let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
print("Kernel \(release), \(quick ? "quick" : "full") run: \(rounds) rounds x \(iterations) on+off pairs; medians.\n")
print("| backend | transition (on+off) | ns | vs eventfd write+read (\(f(eventfdPair)) ns) |")
print("|---|---|---|---|")
for (layout, results) in rows {
  for row in results {
    print("| \(layout) | \(row.name) | \(f(row.nanoseconds)) | \(r(row.nanoseconds / eventfdPair)) |")
  }
}
print(
  "\n| fd | one-way wake latency through epoll_wait (median of \(wakeRounds) rounds) | fastest round | vs eventfd |")
print("|---|---|---|---|")
let eventfdMedian = median(wakeSamples[0])
for (i, subject) in subjects.enumerated() {
  let m = median(wakeSamples[i])
  print("| \(subject.name) | \(f(m)) ns | \(f(wakeSamples[i].min()!)) ns | \(r(m / eventfdMedian)) |")
}
