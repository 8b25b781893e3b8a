// EchoBench: every echo server in its own process, all driven by the same C
// client (echo-client: blocking sockets, one pthread per connection) in one
// run, rounds interleaved; medians reported with ratios against SwiftNIO and
// against the raw C blocking server.
//
//   swift build -c release --package-path Benchmarks
//   Benchmarks/.build/release/EchoBench [--quick] [--rounds N] [--seconds S] [--placement apart|free]
//
// Servers: echo-server-c (the floor), SwiftNIO 2.101.3 (1 event loop
// thread), and EchoServers loop-raw / loop-socket under io_uring and epoll.
// Workloads: 1 and 16 connections, 64 B and 4 KiB request/response round trips.
// Server CPU per round trip: the server process's on-CPU time (every thread,
// /proc/PID/task/*/schedstat) during the measured window, over its round trips.
//
// Placement "apart" (default) pins every server to CPU 1 and the client to
// CPU 0 (taskset), so that no run depends on where the scheduler happened to
// put the two processes; "free" pins nothing.
import BenchSupport
import Glibc

signal(SIGPIPE, SIG_IGN)

let arguments = BenchArguments()
let quick = arguments.quick
let rounds = arguments.int("--rounds", default: quick ? 1 : 5)
let seconds = arguments.double("--seconds", default: quick ? 0.5 : 1.0)
let warmup = quick ? 0.2 : 0.3
let pinned = (arguments.string("--placement") ?? "apart") != "free" && onlineCPUs >= 2
let taskset = "/usr/bin/taskset"
let directory = executableDirectory()

struct Server {
  var name: String
  var executable: String
  var arguments: [String]
}

let servers = [
  Server(name: "C blocking, thread per connection", executable: "echo-server-c", arguments: []),
  Server(name: "SwiftNIO 2.101.3, 1 loop", executable: "EchoServers", arguments: ["nio"]),
  Server(name: "loop raw ops, io_uring", executable: "EchoServers", arguments: ["loop-raw", "--backend", "io_uring"]),
  Server(name: "loop raw ops, epoll", executable: "EchoServers", arguments: ["loop-raw", "--backend", "epoll"]),
  Server(
    name: "ProtocolSocket, io_uring", executable: "EchoServers", arguments: ["loop-socket", "--backend", "io_uring"]),
  Server(name: "ProtocolSocket, epoll", executable: "EchoServers", arguments: ["loop-socket", "--backend", "epoll"]),
]
let cIndex = 0
let nioIndex = 1

struct Workload {
  var connections: Int
  var size: Int
  var name: String {
    "\(connections) connection\(connections == 1 ? "" : "s"), \(size >= 1024 ? "\(size / 1024) KiB" : "\(size) B")"
  }
}
let workloads = [
  Workload(connections: 1, size: 64), Workload(connections: 1, size: 4096),
  Workload(connections: 16, size: 64), Workload(connections: 16, size: 4096),
]

struct Result {
  var rate: Double
  var p50: Double  // us
  var p99: Double  // us
  var cpuPerTrip: Double  // us
}

func parse(_ line: String) -> Result? {
  var fields: [String: Double] = [:]
  for part in line.split(separator: " ") {
    let pair = part.split(separator: "=", maxSplits: 1)
    if pair.count == 2, let v = Double(pair[1]) { fields[String(pair[0])] = v }
  }
  guard let rate = fields["rate"], let p50 = fields["p50_us"], let p99 = fields["p99_us"],
    let cpu = fields["cpu_us_per_trip"]
  else { return nil }
  return Result(rate: rate, p50: p50, p99: p99, cpuPerTrip: cpu)
}

func spawn(_ executable: String, _ args: [String], cpu: Int, server: Bool = false) throws -> ChildProcess {
  let path = directory + "/" + executable
  if pinned { return try ChildProcess(taskset, ["-c", String(cpu), path] + args, tiedInput: server) }
  return try ChildProcess(path, args, tiedInput: server)
}

// Start every server once; they idle while another is measured.
var running: [(ChildProcess, Int)] = []
for server in servers {
  let child = try spawn(server.executable, server.arguments, cpu: 1, server: true)
  guard let line = child.readLine(), line.hasPrefix("PORT "), let port = Int(line.dropFirst(5)) else {
    logLine("EchoBench: \(server.name) did not start")
    exit(1)
  }
  running.append((child, port))
}
defer { for (child, _) in running { child.terminate() } }

// results[workload][server] = one Result per round
var results = [[[Result]]](repeating: [[Result]](repeating: [], count: servers.count), count: workloads.count)
var rawLines: [String] = []
let started = nowNanoseconds()
for round in 0..<rounds {
  for (w, workload) in workloads.enumerated() {
    // Rotate the order each round so that no server always runs first.
    let order = servers.indices.map { ($0 + round + w) % servers.count }
    for s in order {
      let (child, port) = running[s]
      let client = try spawn(
        "echo-client",
        [
          "127.0.0.1", String(port), String(workload.connections), String(workload.size), String(seconds),
          String(warmup), String(child.pid),
        ], cpu: 0)
      let line = client.readAll()
      let status = client.wait()
      guard status == 0, let result = parse(line) else {
        logLine("EchoBench: client failed against \(servers[s].name) (\(workload.name)): status \(status) \(line)")
        exit(1)
      }
      results[w][s].append(result)
      rawLines.append("round \(round + 1) | \(workload.name) | \(servers[s].name) | \(line)")
    }
  }
}
let elapsed = Double(nowNanoseconds() - started) / 1e9

// MARK: Report

@MainActor func med(_ w: Int, _ s: Int, _ key: (Result) -> Double) -> Double { median(results[w][s].map(key)) }

print("# EchoBench")
print("")
print(
  "\(machineSummary()); \(quick ? "quick" : "full") run: \(rounds) round\(rounds == 1 ? "" : "s") per cell, "
    + "\(fixed(seconds, 1)) s measured after \(fixed(warmup, 1)) s warm-up, servers rotated each round; placement "
    + "\(pinned ? "apart (servers on CPU 1, client on CPU 0)" : "free"); medians over rounds; \(fixed(elapsed, 0)) s.")
print("")
print("## Ratios against SwiftNIO (round trips/s: higher is better; latency and CPU: lower is better)")
print("")
for (w, workload) in workloads.enumerated() {
  print("### \(workload.name)")
  print("")
  let nio = (med(w, nioIndex, \.rate), med(w, nioIndex, \.p50), med(w, nioIndex, \.p99), med(w, nioIndex, \.cpuPerTrip))
  let c = (med(w, cIndex, \.rate), med(w, cIndex, \.p50), med(w, cIndex, \.p99), med(w, cIndex, \.cpuPerTrip))
  printTable(
    [
      "server", "rt/s vs NIO", "p50 vs NIO", "CPU/rt vs NIO", "rt/s vs C", "p50 vs C", "CPU/rt vs C", "round trips/s",
      "p50 us", "p99 us", "server CPU us/rt",
    ],
    servers.indices.map { s in
      let rate = med(w, s, \.rate)
      let p50 = med(w, s, \.p50)
      let p99 = med(w, s, \.p99)
      let cpu = med(w, s, \.cpuPerTrip)
      return [
        servers[s].name, ratio(rate / nio.0), ratio(p50 / nio.1), ratio(cpu / nio.3), ratio(rate / c.0),
        ratio(p50 / c.1), ratio(cpu / c.3), rate.isFinite ? BenchSupport.rate(rate) : "-", fixed(p50, 1),
        fixed(p99, 1), fixed(cpu, 2),
      ]
    })
}
print("## io_uring / epoll, same server code")
print("")
var backendRows: [[String]] = []
for (w, workload) in workloads.enumerated() {
  for (name, u, e) in [("loop raw ops", 2, 3), ("ProtocolSocket", 4, 5)] {
    backendRows.append([
      workload.name, name, ratio(med(w, u, \.rate) / med(w, e, \.rate)), ratio(med(w, u, \.p50) / med(w, e, \.p50)),
      ratio(med(w, u, \.p99) / med(w, e, \.p99)), ratio(med(w, u, \.cpuPerTrip) / med(w, e, \.cpuPerTrip)),
    ])
  }
}
printTable(["workload", "server", "round trips/s", "p50", "p99", "server CPU/rt"], backendRows)
print("## Client lines")
print("")
print("```")
for line in rawLines { print(line) }
print("```")
