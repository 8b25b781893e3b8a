import Glibc
import UserProto

/// What every role that makes a socket shares: the fd count before anything
/// was made, the process's CPU at the start, the loop, the wait meter and
/// the JSON line being built. ``finish(_:)`` shuts the loop down, counts the
/// fds again and prints the line.
final class RoleRun {
  let fdsBefore: Int
  let start = monotonicNanoseconds()
  let cpuStart = processCPUMicroseconds()
  let loop: EventLoop
  var meter = WaitMeter()
  var json = JSONLine()

  init(role: String) throws {
    fdsBefore = openDescriptorCount()
    loop = try EventLoop()
    json.add("role", role)
    json.add("backend", "\(loop.backend)")
  }

  /// Milliseconds since the run started.
  var elapsedMilliseconds: Int { Int((monotonicNanoseconds() - start) / 1_000_000) }

  /// Shuts the loop down (the socket must have been released), adds the
  /// closing fields and prints the line; returns the exit status.
  func finish(_ status: Int32) -> Int32 {
    loop.shutdownAndWait()
    json.add("fds_before", fdsBefore)
    json.add("fds_after", openDescriptorCount())
    json.add("cpu_ms", (processCPUMicroseconds() - cpuStart) / 1000)
    json.add("wait_ms", meter.waitMilliseconds)
    json.add("wait_cpu_ms", meter.waitCPUMilliseconds)
    json.add("elapsed_ms", elapsedMilliseconds)
    json.add("rss_max_kb", peakResidentKilobytes())
    json.add("exit", Int(status))
    json.emit()
    return status
  }
}

/// Watches a socket's pipe counters between calls: when its pipes were
/// first up, and when one was first lost after that (the wall clock, for
/// the script's detection times).
struct PipeWatch {
  private var removed = 0
  private(set) var hadPipe = false
  private(set) var firstLossWallMilliseconds = -1
  private(set) var lastUpNanoseconds: UInt64 = 0

  /// Reads `statistics`; returns true when a pipe went since the last call.
  @discardableResult
  mutating func observe(_ statistics: SocketStatistics) -> Bool {
    let now = monotonicNanoseconds()
    if statistics.pipes > 0 {
      hadPipe = true
      lastUpNanoseconds = now
    }
    let lost = statistics.pipesRemoved > removed
    removed = statistics.pipesRemoved
    if lost && hadPipe && firstLossWallMilliseconds < 0 { firstLossWallMilliseconds = wallMilliseconds() }
    return lost
  }

  func add(to json: inout JSONLine) {
    json.add("pipe_lost_at_ms", firstLossWallMilliseconds)
  }
}

/// The socket counters every role prints.
func add(_ statistics: SocketStatistics, to json: inout JSONLine) {
  json.add(
    "socket",
    counts: [
      ("messages_sent", statistics.messagesSent), ("messages_received", statistics.messagesReceived),
      ("pipes", statistics.pipes), ("pipes_added", statistics.pipesAdded), ("pipes_removed", statistics.pipesRemoved),
      ("pipe_failures", statistics.pipeFailures), ("reconnects", statistics.reconnects),
      ("accept_errors", statistics.acceptErrors), ("stale_drops", statistics.staleDrops),
      ("datagram_drops", statistics.datagramDrops),
    ])
}
