import ExampleProtocols
import Glibc
import UserProto

/// `send` and `udp-send`: dials, waits for a ready pipe, sends `count`
/// numbered messages (paced by `rate`, bounded by `seconds`), then waits
/// until the handler took every accepted message and its pipes handed them
/// all to the kernel, lingers, closes gracefully and prints its line:
///
/// - `accepted`: sends the socket accepted (trySend returned true);
/// - `delivered`: of those, messages its pipes handed to the kernel (the
///   handler took them, did not drop them, and they were not lost with a
///   pipe; for PUB, copies to its one subscriber);
/// - `dropped`: by cause, the handler's (lost with a pipe, not writable for
///   PUB) and `unsent_at_close` (accepted, never taken by the handler: no
///   pipe could take them before the run ended);
/// - `queued_at_close`: taken, still in a pipe's output when the drain time
///   ran out (the graceful close may still deliver them: neither delivered
///   nor dropped).
///
/// A REQ sender sends one request at a time and waits for its reply
/// (`delivered` then counts the replies that came back, matched by
/// sequence number).
struct SendConfig {
  var url: String
  var count: Int
  var size: Int
  var rate: Int
  var seconds: Int
  var connectSeconds: Int
  var drainSeconds: Int
  var lingerMilliseconds: Int
  var stopAfterPipeLossMilliseconds: Int
  var replyTimeoutMilliseconds: Int
  var progress: ProgressFile?

  init(_ arguments: Arguments, datagram: Bool) {
    url = arguments.required("dial")
    count = arguments.int("count", default: 10_000)
    size = arguments.int("size", default: datagram ? 256 : 1024, in: StreamMessages.headerSize...(1 << 20))
    rate = arguments.int("rate", default: 0, in: 0...10_000_000)
    seconds = arguments.int("seconds", default: 120, in: 1...86_400)
    connectSeconds = arguments.int("connect-seconds", default: 10, in: 0...3600)
    drainSeconds = arguments.int("drain-seconds", default: 30, in: 0...3600)
    lingerMilliseconds = arguments.int("linger-ms", default: 200, in: 0...600_000)
    stopAfterPipeLossMilliseconds = arguments.int("stop-after-pipe-loss-ms", default: -1, in: -1...3_600_000)
    replyTimeoutMilliseconds = arguments.int("reply-timeout-ms", default: 30_000, in: 1...3_600_000)
    progress = ProgressFile(arguments.string("progress"))
  }
}

enum SendRole {
  static let options = Set([
    "proto", "dial", "count", "size", "rate", "seconds", "connect-seconds", "drain-seconds", "linger-ms",
    "stop-after-pipe-loss-ms", "reply-timeout-ms", "resend-ms", "progress",
  ]).union(Arguments.socketOptions)

  static func run(_ arguments: Arguments, datagram: Bool) throws -> Int32 {
    let options = arguments.socketOptions()
    let proto = datagram ? "udp" : arguments.required("proto")
    let resend = arguments.int("resend-ms", default: 1000, in: 0...3_600_000)
    // The fds are counted first: the progress file opens after, and closes
    // before the count at the end.
    let run = try RoleRun(role: datagram ? "udp-send" : "send")
    let config = SendConfig(arguments, datagram: datagram)
    run.json.add("proto", proto)
    var status: Int32 = 0
    do {
      switch proto {
      case "push": status = try sendStream(Socket(Push0Handler(), loop: run.loop, options: options), config, run)
      case "pub": status = try sendStream(Socket(Pub0Handler(), loop: run.loop, options: options), config, run)
      case "pair": status = try sendStream(Socket(Pair0Handler(), loop: run.loop, options: options), config, run)
      case "udp": status = try sendStream(Socket(DatagramHandler(), loop: run.loop, options: options), config, run)
      case "req":
        let handler = Req0Handler(resendInterval: .milliseconds(resend))
        status = try request(Socket(handler, loop: run.loop, options: options), config, run)
      default: failUsage("send --proto takes push, pub, req or pair, not \(proto)")
      }
    } catch {
      run.json.add("error", "\(error)")
      status = 1
    }
    config.progress?.close()
    return run.finish(status)
  }

  /// Dials and waits up to `connectSeconds` for a ready pipe; false if none
  /// came (the messages then wait in the send queue, or, for PUB, reach
  /// nobody).
  private static func waitForPipe<H: FaultHandler>(_ socket: Socket<H>, _ config: SendConfig) throws -> Bool {
    try socket.dial(config.url, reconnect: ReconnectPolicy(minimum: .milliseconds(100), maximum: .seconds(1)))
    let deadline = monotonicNanoseconds() + UInt64(config.connectSeconds) * 1_000_000_000
    while true {
      let ready = try socket.withHandlerAndWait { handler, context in handler.faultReadyPipes(context) }
      if ready > 0 { return true }
      if monotonicNanoseconds() >= deadline { return false }
      sleepMilliseconds(5)
    }
  }

  private static func sendStream<H: FaultHandler>(_ socket: Socket<H>, _ config: SendConfig, _ run: RoleRun) throws
    -> Int32
  {
    let connected = try waitForPipe(socket, config)
    run.json.add("connected", connected)
    let fd = socket.fileDescriptor
    let messages = StreamMessages(size: config.size)
    var watch = PipeWatch()
    watch.observe(socket.statistics)
    var accepted = 0
    var wouldBlock = 0
    var blocked: UInt64 = 0
    var failure: String?
    var stopReason = "count"
    let start = monotonicNanoseconds()
    let deadline = start + UInt64(config.seconds) * 1_000_000_000
    sending: while accepted < config.count {
      if config.rate > 0 { sleepUntil(start + UInt64(accepted) * 1_000_000_000 / UInt64(config.rate)) }
      let message = messages.message(UInt64(accepted))
      var blockedSince: UInt64?
      defer { if let since = blockedSince { blocked += monotonicNanoseconds() - since } }
      while true {
        watch.observe(socket.statistics)
        let now = monotonicNanoseconds()
        if now >= deadline {
          stopReason = "seconds"
          break sending
        }
        if config.stopAfterPipeLossMilliseconds >= 0, watch.firstLossWallMilliseconds >= 0,
          wallMilliseconds() - watch.firstLossWallMilliseconds >= config.stopAfterPipeLossMilliseconds
        {
          stopReason = "pipe lost"
          break sending
        }
        let taken: Bool
        do {
          taken = try socket.trySend(message)
        } catch {
          failure = "\(error)"
          stopReason = "send failed"
          break sending
        }
        if taken { break }
        if blockedSince == nil {
          blockedSince = now
          wouldBlock += 1
        }
        _ = run.meter.poll(fd, Int16(POLLOUT), milliseconds: 100)
      }
      accepted += 1
      config.progress?.record(accepted)
    }
    let sendingMilliseconds = Int((monotonicNanoseconds() - start) / 1_000_000)

    // Everything accepted taken by the handler and handed on by its pipes.
    let drainDeadline = monotonicNanoseconds() + UInt64(config.drainSeconds) * 1_000_000_000
    var drained = false
    var queued = 0
    while true {
      watch.observe(socket.statistics)
      queued = try socket.withHandlerAndWait { _, context in
        context.pipes.reduce(0) { $0 + $1.queuedOutputMessages }
      }
      if socket.statistics.messagesSent >= accepted && queued == 0 {
        drained = true
        break
      }
      if monotonicNanoseconds() >= drainDeadline { break }
      sleepMilliseconds(5)
    }
    run.meter.idle(milliseconds: config.lingerMilliseconds)
    watch.observe(socket.statistics)
    let drops = try socket.withHandlerAndWait { handler, _ in handler.faultDrops }
    let counters = try socket.withHandlerAndWait { handler, _ in handler.faultCounters }
    let statistics = socket.statistics
    let closed = closeGracefully(socket)

    // What the handler took and did not drop (for PUB: copies to its one
    // subscriber) and its pipes no longer hold reached the kernel.
    let handlerDropped = drops.reduce(0) { $0 + $1.value }
    let unsent = accepted - statistics.messagesSent
    run.json.add("accepted", accepted)
    run.json.add("delivered", statistics.messagesSent - handlerDropped - queued)
    run.json.add("dropped", counts: drops + [(name: "unsent_at_close", value: unsent)])
    run.json.add("queued_at_close", queued)
    run.json.add("count", config.count)
    run.json.add("stop", stopReason)
    run.json.add("drained", drained)
    run.json.add("closed_cleanly", closed)
    run.json.add("would_block", wouldBlock)
    run.json.add("blocked_ms", Int(blocked / 1_000_000))
    run.json.add("sending_ms", sendingMilliseconds)
    watch.add(to: &run.json)
    run.json.add("handler", counts: counters)
    add(statistics, to: &run.json)
    if let failure { run.json.add("error", failure) }
    return failure == nil ? 0 : 1
  }

  /// REQ: one request at a time, each waiting up to `replyTimeoutMilliseconds`
  /// for its reply (REQ resends it meanwhile); a request without a reply is
  /// abandoned by the next one.
  private static func request(_ socket: Socket<Req0Handler>, _ config: SendConfig, _ run: RoleRun) throws -> Int32 {
    let connected = try waitForPipe(socket, config)
    run.json.add("connected", connected)
    let fd = socket.fileDescriptor
    let messages = StreamMessages(size: config.size)
    var watch = PipeWatch()
    var accepted = 0
    var replies = 0
    var wrongReplies = 0
    var unanswered = 0
    var failure: String?
    var stopReason = "count"
    let start = monotonicNanoseconds()
    let deadline = start + UInt64(config.seconds) * 1_000_000_000
    requests: while accepted < config.count {
      if config.rate > 0 { sleepUntil(start + UInt64(accepted) * 1_000_000_000 / UInt64(config.rate)) }
      let sequence = UInt64(accepted)
      do {
        while try !socket.trySend(messages.message(sequence)) {
          _ = run.meter.poll(fd, Int16(POLLOUT), milliseconds: 100)
          if monotonicNanoseconds() >= deadline {
            stopReason = "seconds"
            break requests
          }
        }
      } catch {
        failure = "\(error)"
        stopReason = "send failed"
        break requests
      }
      accepted += 1
      config.progress?.record(accepted)
      let replyDeadline = monotonicNanoseconds() + UInt64(config.replyTimeoutMilliseconds) * 1_000_000
      waiting: while true {
        watch.observe(socket.statistics)
        let now = monotonicNanoseconds()
        if now >= deadline {
          stopReason = "seconds"
          unanswered += 1
          break requests
        }
        if now >= replyDeadline {
          unanswered += 1
          break waiting
        }
        _ = run.meter.poll(fd, Int16(POLLIN), milliseconds: 100)
        do {
          while case .message(let reply) = try socket.tryReceive() {
            if StreamMessages.decode(reply)?.sequence == sequence {
              replies += 1
              break waiting
            }
            wrongReplies += 1
          }
        } catch {
          failure = "\(error)"
          stopReason = "receive failed"
          break requests
        }
      }
    }
    let sendingMilliseconds = Int((monotonicNanoseconds() - start) / 1_000_000)
    run.meter.idle(milliseconds: config.lingerMilliseconds)
    let drops = try socket.withHandlerAndWait { handler, _ in handler.faultDrops }
    let counters = try socket.withHandlerAndWait { handler, _ in handler.faultCounters }
    let statistics = socket.statistics
    let closed = closeGracefully(socket)

    run.json.add("accepted", accepted)
    run.json.add("delivered", replies)
    run.json.add(
      "dropped",
      counts: drops + [(name: "unanswered", value: unanswered), (name: "wrong_replies", value: wrongReplies)])
    run.json.add("count", config.count)
    run.json.add("stop", stopReason)
    run.json.add("closed_cleanly", closed)
    run.json.add("sending_ms", sendingMilliseconds)
    watch.add(to: &run.json)
    run.json.add("handler", counts: counters)
    add(statistics, to: &run.json)
    if let failure { run.json.add("error", failure) }
    return failure == nil ? 0 : 1
  }

  /// Closes gracefully and waits up to 10 s for the pipes to go; true when
  /// they did (false: aborted after the wait).
  private static func closeGracefully<H: FaultHandler>(_ socket: Socket<H>) -> Bool {
    try? socket.close()
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while socket.pipeCount > 0 {
      if monotonicNanoseconds() >= deadline {
        socket.abort()
        return false
      }
      sleepMilliseconds(5)
    }
    return true
  }
}
