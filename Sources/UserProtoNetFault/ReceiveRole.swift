import ExampleProtocols
import Glibc
import UserProto

/// `recv` and `udp-recv`: listens, prints a `"event":"listening"` line,
/// receives (a REP answers each request with its body), and stops when:
/// `expect` distinct messages came (or `until-sequence` was seen) and then
/// `settle-ms` passed (to catch duplicates), or no message came for
/// `idle-exit-ms` after the first, or no pipe was up for `no-pipe-exit-ms`
/// after the first one, or `seconds` passed. With `stall-ms` it does not
/// read for that long once a pipe is up (a peer that stops reading). Then it
/// waits `idle-ms` (counted as waiting), counts its fds with the listener
/// still open (`fds_idle`, against `fds_listening`), and prints its line:
///
/// - `accepted`: messages the socket queued for the application
///   (``SocketStatistics/messagesReceived``);
/// - `delivered`: distinct sequence numbers the application received, with
///   `duplicates`, `reordered`, `gaps` and `contiguous_prefix`;
/// - `dropped`: by cause, the handler's (SUB's filtered, REP's) and the
///   socket's UDP drops (`datagram`).
struct ReceiveConfig {
  var url: String
  var expect: Int
  var untilSequence: Int
  var settleMilliseconds: Int
  var seconds: Int
  var stallMilliseconds: Int
  var idleExitMilliseconds: Int
  var noPipeExitMilliseconds: Int
  var idleMilliseconds: Int
  var untilNoPipes: Bool
  var progress: ProgressFile?

  init(_ arguments: Arguments) {
    url = arguments.required("listen")
    expect = arguments.int("expect", default: 0)
    untilSequence = arguments.int("until-sequence", default: -1, in: -1...Int(Int32.max))
    settleMilliseconds = arguments.int("settle-ms", default: 500, in: 0...600_000)
    seconds = arguments.int("seconds", default: 120, in: 1...86_400)
    stallMilliseconds = arguments.int("stall-ms", default: 0, in: 0...3_600_000)
    idleExitMilliseconds = arguments.int("idle-exit-ms", default: 0, in: 0...3_600_000)
    noPipeExitMilliseconds = arguments.int("no-pipe-exit-ms", default: 0, in: 0...3_600_000)
    idleMilliseconds = arguments.int("idle-ms", default: 0, in: 0...3_600_000)
    untilNoPipes = arguments.isSet("until-no-pipes")
    progress = ProgressFile(arguments.string("progress"))
  }
}

enum ReceiveRole {
  static let options = Set([
    "proto", "listen", "expect", "until-sequence", "settle-ms", "seconds", "stall-ms", "idle-exit-ms",
    "no-pipe-exit-ms", "idle-ms", "progress",
  ]).union(Arguments.socketOptions)
  static let switches: Set<String> = ["until-no-pipes"]

  static func run(_ arguments: Arguments, datagram: Bool) throws -> Int32 {
    let options = arguments.socketOptions()
    let proto = datagram ? "udp" : arguments.required("proto")
    // The fds are counted first: the progress file opens after, and closes
    // before the count at the end.
    let run = try RoleRun(role: datagram ? "udp-recv" : "recv")
    let config = ReceiveConfig(arguments)
    run.json.add("proto", proto)
    var status: Int32 = 0
    do {
      switch proto {
      case "pull": status = try receive(Socket(Pull0Handler(), loop: run.loop, options: options), config, run)
      case "pair": status = try receive(Socket(Pair0Handler(), loop: run.loop, options: options), config, run)
      case "udp": status = try receive(Socket(DatagramHandler(), loop: run.loop, options: options), config, run)
      case "sub":
        let handler = Sub0Handler(subscriptions: [[]])
        status = try receive(Socket(handler, loop: run.loop, options: options), config, run)
      case "rep":
        status = try receive(Socket(Rep0Handler(), loop: run.loop, options: options), config, run, replies: true)
      default: failUsage("recv --proto takes pull, sub, rep or pair, not \(proto)")
      }
    } catch {
      run.json.add("error", "\(error)")
      status = 1
    }
    config.progress?.close()
    return run.finish(status)
  }

  private static func receive<H: FaultHandler>(
    _ socket: Socket<H>, _ config: ReceiveConfig, _ run: RoleRun, replies: Bool = false
  ) throws -> Int32 {
    let bound = try socket.listen(config.url)
    let fdsListening = openDescriptorCount()
    var announcement = JSONLine()
    announcement.add("event", "listening")
    announcement.add("url", bound.description)
    announcement.add("pid", Int(getpid()))
    announcement.emit()

    let fd = socket.fileDescriptor
    var tracker = SequenceTracker()
    var watch = PipeWatch()
    var taken = 0
    var stalled = false
    var stallCPU = 0
    var stallMilliseconds = 0
    var completeSince: UInt64?
    var lastMessage: UInt64 = 0
    var failure: String?
    var stopReason = "seconds"
    let deadline = run.start + UInt64(config.seconds) * 1_000_000_000
    receiving: while true {
      let statistics = socket.statistics
      watch.observe(statistics)
      let now = monotonicNanoseconds()
      if now >= deadline { break receiving }
      if config.stallMilliseconds > 0, !stalled, statistics.pipes > 0 {
        // A peer that stops reading: the loop pauses the pipes at the
        // receive high watermark, and the sender's fd stops showing writable.
        stalled = true
        let cpu = processCPUMicroseconds()
        let began = monotonicNanoseconds()
        run.meter.idle(milliseconds: config.stallMilliseconds)
        stallCPU = (processCPUMicroseconds() - cpu) / 1000
        stallMilliseconds = Int((monotonicNanoseconds() - began) / 1_000_000)
        continue
      }
      let complete =
        (config.expect > 0 && tracker.unique >= config.expect)
        || (config.untilSequence >= 0 && tracker.highest >= config.untilSequence)
      if complete {
        if completeSince == nil { completeSince = now }
        let settled = now - (completeSince ?? now) >= UInt64(config.settleMilliseconds) * 1_000_000
        if settled && (!config.untilNoPipes || statistics.pipes == 0) {
          stopReason = "complete"
          break receiving
        }
      }
      if config.idleExitMilliseconds > 0, taken > 0,
        now - lastMessage >= UInt64(config.idleExitMilliseconds) * 1_000_000
      {
        stopReason = "idle"
        break receiving
      }
      if config.noPipeExitMilliseconds > 0, watch.hadPipe, statistics.pipes == 0,
        now - watch.lastUpNanoseconds >= UInt64(config.noPipeExitMilliseconds) * 1_000_000
      {
        stopReason = "no pipe"
        break receiving
      }
      let events = run.meter.poll(fd, Int16(POLLIN), milliseconds: 50)
      guard events & Int16(POLLIN) != 0 else { continue }
      do {
        draining: while true {
          switch try socket.tryReceive() {
          case .message(let message):
            taken += 1
            lastMessage = monotonicNanoseconds()
            tracker.record(message)
            config.progress?.record(tracker.unique)
            if replies {
              while try !socket.trySend(message) { _ = run.meter.poll(fd, Int16(POLLOUT), milliseconds: 100) }
            }
          case .wouldBlock:
            break draining
          case .endOfStream:
            stopReason = "end of stream"
            break receiving
          }
        }
      } catch {
        failure = "\(error)"
        stopReason = "receive failed"
        break receiving
      }
    }
    run.meter.idle(milliseconds: config.idleMilliseconds)
    watch.observe(socket.statistics)
    let drops = try socket.withHandlerAndWait { handler, _ in handler.faultDrops }
    let counters = try socket.withHandlerAndWait { handler, _ in handler.faultCounters }
    let statistics = socket.statistics
    let fdsIdle = openDescriptorCount()
    socket.abort()

    run.json.add("url", bound.description)
    run.json.add("accepted", statistics.messagesReceived)
    tracker.add(to: &run.json)
    run.json.add("taken", taken)
    run.json.add("dropped", counts: drops + [(name: "datagram", value: statistics.datagramDrops)])
    run.json.add("expect", config.expect)
    run.json.add("stop", stopReason)
    run.json.add("fds_listening", fdsListening)
    run.json.add("fds_idle", fdsIdle)
    run.json.add("stall_ms", stallMilliseconds)
    run.json.add("stall_cpu_ms", stallCPU)
    watch.add(to: &run.json)
    run.json.add("handler", counts: counters)
    add(statistics, to: &run.json)
    if let failure { run.json.add("error", failure) }
    return failure == nil ? 0 : 1
  }
}
