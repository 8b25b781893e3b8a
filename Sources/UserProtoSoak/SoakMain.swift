// userproto-soak: the bounded soak that scripts/soak.sh runs (docs/reliability.md#soak).
//
//   userproto-soak [SECONDS]    run for SECONDS (default 600), one sample line a second
//
// Concurrently, until the time is up: connection churn (a REQ socket per
// cycle against a REP echo server, over TCP and IPC in turn, closed, aborted
// or dropped in turn); a publisher with a fast, a slow and a vanishing
// subscriber; and short and far loop timers scheduled and cancelled from off
// the loops. Each second a line `t=... rss_kb=... fds=... churn=...` goes to
// stdout (SoakSampler.swift); lines starting with `#` are comments, `error:`
// lines are failures. At the end every socket and loop is closed, and the
// fd count must come back to what it was before the first loop started.
//
// Exit status: 0 when nothing failed; 1 when a worker hit an unexpected
// error or stalled, a count that must hold did not, or an fd stayed open (or
// one open at the start was closed); 2 on a usage error.
import Glibc
import UserProto

@main
struct SoakMain {
  static let usage = "usage: userproto-soak [SECONDS]   (1 to 604800; default 600)"

  static func main() async {
    let arguments = Array(CommandLine.arguments.dropFirst())
    var seconds = 600
    if let first = arguments.first {
      if first == "-h" || first == "--help" {
        print(usage)
        exit(0)
      }
      guard arguments.count == 1, let value = Int(first), (1...604_800).contains(value) else {
        print("userproto-soak: expected one duration in seconds, not \"\(arguments.joined(separator: " "))\"")
        print(usage)
        exit(2)
      }
      seconds = value
    }
    let status = await Soak.run(seconds: seconds)
    exit(status)
  }
}

enum Soak {
  /// Runs the soak; returns the exit status.
  static func run(seconds: Int) async -> Int32 {
    await warmUp()
    let descriptorsAtStart = ProcessStats.descriptorTargets()
    let fdsAtStart = ProcessStats.ownDescriptors()
    let rig: SoakRig
    do {
      rig = try SoakRig()
    } catch {
      print("error: setting up: \(error)")
      fflush(nil)
      return 1
    }
    print(
      "# userproto-soak seconds=\(seconds) pid=\(getpid()) fds_start=\(fdsAtStart) "
        + "server_loop=\(rig.serverLoop.backend) client_loop=\(rig.clientLoop.backend)")
    let repURLs = rig.repURLs.map(\.description).joined(separator: ",")
    let pubURLs = rig.pubURLs.map(\.description).joined(separator: ",")
    print("# rep=\(repURLs) pub=\(pubURLs)")
    let start = ContinuousClock.now
    print(await rig.takeSample(elapsed: .zero).line)
    fflush(nil)

    // SOAK_WORKERS=churn,pubsub,timers (default all three) runs a subset,
    // to find which workload a growth comes from.
    let selected = getenv("SOAK_WORKERS").map { String(cString: $0).split(separator: ",").map(String.init) }
    let runs = { (name: String) in selected?.contains(name) ?? true }
    await withTaskGroup(of: Void.self) { group in
      if runs("churn") {
        group.addTask { await rig.serveEcho() }
        group.addTask { await rig.churn() }
      }
      if runs("pubsub") {
        group.addTask { await rig.publish() }
        group.addTask { await rig.readFast() }
        group.addTask { await rig.readSlowly() }
        group.addTask { await rig.vanish() }
      }
      if runs("timers") { group.addTask { await rig.churnTimers() } }
      await rig.sampleEverySecond(for: seconds, from: start)
      group.cancelAll()
    }

    var problems = rig.failures.all
    problems += await rig.settleTimers()
    problems += await rig.checkTotals()
    await rig.tearDown()
    let fdsAtEnd = ProcessStats.descriptors(settlingAt: fdsAtStart, within: .seconds(10))
    print("# fds_start=\(fdsAtStart) fds_end=\(fdsAtEnd)")
    if fdsAtEnd != fdsAtStart {
      problems.append(
        fdsAtEnd > fdsAtStart
          ? "\(fdsAtEnd - fdsAtStart) fds still open after every socket and loop closed"
          : "\(fdsAtStart - fdsAtEnd) fds open at the start were closed (by something that did not own them?)")
      printDescriptorChanges(from: descriptorsAtStart)
    }
    if problems.isEmpty {
      print("# result: ok")
    } else {
      // Worker failures were printed when they happened; print them all again
      // here, so the end of the output says why the soak failed.
      for problem in problems { print("error: \(problem)") }
      print("# result: failed (\(problems.count) problems)")
    }
    fflush(nil)
    return problems.isEmpty ? 0 : 1
  }

  /// Makes the process's one-time allocations before the fd count the soak
  /// must return to is taken: the runtime's timer fds (one per clock, kept
  /// once made), and what a first loop and a first socket set up.
  static func warmUp() async {
    try? await Task.sleep(for: .milliseconds(1))
    try? await Task.sleep(until: SuspendingClock.now + .milliseconds(1), clock: .suspending)
    guard let loop = try? EventLoop(configuration: .init(name: "soak-warm-up")) else { return }
    try? await loop.sleep(for: .milliseconds(1))
    if let socket = try? Socket(WarmUpHandler(), loop: loop) {
      _ = socket.fileDescriptor
      await socket.abortAndWait()
    }
    await loop.shutdown()
  }

  /// Prints the fds that differ from the start's, with what they refer to.
  static func printDescriptorChanges(from start: [Int: String]) {
    let now = ProcessStats.descriptorTargets()
    for (fd, target) in now.sorted(by: { $0.key < $1.key }) where start[fd] != target {
      print("# fd \(fd) -> \(target) (open now, not at the start)")
    }
    for (fd, target) in start.sorted(by: { $0.key < $1.key }) where now[fd] != target {
      print("# fd \(fd) -> \(target) (open at the start, not now)")
    }
  }
}

/// The warm-up's socket: the default hooks.
final class WarmUpHandler: SocketHandler {}
