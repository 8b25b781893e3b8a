import ExampleProtocols
import Glibc
import Synchronization
import UserProto

/// The workers: each runs until its task is cancelled, counting what it
/// did; an unexpected error is recorded in ``SoakRig/failures`` and ends
/// that worker (and, through the sampler, the soak). Errors that come from
/// the cancellation itself are not failures.
extension SoakRig {
  // MARK: Connection churn

  /// The churn's echo server: answers each request with its body.
  func serveEcho() async {
    do {
      for try await request in rep.messages {
        try await rep.send(request)
        counters.served.add(1, ordering: .relaxed)
      }
      if !Task.isCancelled { failures.record("echo server", SoakError("the REP socket reached its end")) }
    } catch {
      if !Task.isCancelled { failures.record("echo server", error) }
    }
  }

  /// Connection churn, as fast as it goes: a new REQ socket per cycle dials
  /// the echo server, sends one request, checks the reply and closes.
  func churn() async {
    var cycle = 0
    do {
      while !Task.isCancelled {
        cycle += 1
        try await churnOnce(cycle)
        counters.churn.add(1, ordering: .relaxed)
      }
    } catch {
      if !Task.isCancelled { failures.record("churn (cycle \(cycle))", error) }
    }
  }

  /// One cycle. Over 12 cycles every combination comes round: TCP or IPC;
  /// the fd handed out (mask updates on) or not; closed gracefully and
  /// waited for, aborted and waited for, or dropped (its deinit aborts it
  /// and nobody waits).
  private func churnOnce(_ cycle: Int) async throws {
    let url = repURLs[cycle % repURLs.count]
    let body = Array("churn \(cycle)".utf8)
    let req = try Req0Socket(Req0Handler(), loop: clientLoop)
    if cycle % 4 < 2 { _ = req.fileDescriptor }
    try req.dial(url)
    try await req.send(body)
    guard let reply = try await req.receive() else { throw SoakError("the REQ socket ended before its reply") }
    guard reply == body else {
      throw SoakError("the reply to \"churn \(cycle)\" was \"\(String(decoding: reply, as: UTF8.self))\"")
    }
    switch cycle % 3 {
    case 0: await req.closeAndWait()
    case 1: await req.abortAndWait()
    default: break
    }
  }

  // MARK: Pub/sub

  /// Publishes ``publishRate`` messages a second, each carrying the next
  /// sequence number.
  func publish() async {
    var message = [UInt8](repeating: UInt8(ascii: "."), count: SoakRig.messageSize)
    var sequence: UInt64 = 0
    var due = 0
    let start = ContinuousClock.now
    do {
      while !Task.isCancelled {
        let target = Int((ContinuousClock.now - start) / .seconds(1) * Double(SoakRig.publishRate))
        // Held up (a busy machine): catch up by one burst at most.
        due = max(due, target - SoakRig.publishBurst)
        while due < target {
          sequence += 1
          for i in 0..<8 { message[i] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * i)) }
          try await publisher.send(message)
          counters.published.add(1, ordering: .relaxed)
          due += 1
        }
        try await Task.sleep(for: .milliseconds(2))
      }
    } catch {
      if !Task.isCancelled { failures.record("publisher", error) }
    }
  }

  /// The fast subscriber: takes every message as it comes.
  func readFast() async {
    var last: UInt64 = 0
    do {
      while true {
        guard let message = try await fast.receive() else { throw SoakError("the SUB socket reached its end") }
        try SoakRig.check(message, after: &last)
        counters.fastReceived.add(1, ordering: .relaxed)
      }
    } catch {
      if !Task.isCancelled { failures.record("fast subscriber", error) }
    }
  }

  /// The slow subscriber: one message every ``slowReadInterval``. Its
  /// receive queue stays full, reading pauses, and its pipe at the
  /// publisher fills: the publisher drops its copies (``Pub0Handler/drops``).
  func readSlowly() async {
    var last: UInt64 = 0
    do {
      while true {
        try await Task.sleep(for: SoakRig.slowReadInterval)
        guard let message = try await slow.receive() else { throw SoakError("the SUB socket reached its end") }
        try SoakRig.check(message, after: &last)
        counters.slowReceived.add(1, ordering: .relaxed)
      }
    } catch {
      if !Task.isCancelled { failures.record("slow subscriber", error) }
    }
  }

  /// Vanishing subscribers, one after another: each connects, receives 1
  /// to 64 messages, and goes.
  func vanish() async {
    var cycle = 0
    do {
      while !Task.isCancelled {
        cycle += 1
        try await vanishOnce(cycle)
        counters.vanished.add(1, ordering: .relaxed)
      }
    } catch {
      if !Task.isCancelled { failures.record("vanishing subscriber (cycle \(cycle))", error) }
    }
  }

  /// One vanishing subscriber, going one of four ways in turn, over TCP
  /// for four cycles and then over IPC for four (every combination in 8).
  private func vanishOnce(_ cycle: Int) async throws {
    let url = pubURLs[(cycle / 4) % pubURLs.count]
    let wanted = Int.random(in: 1...64)
    switch cycle % 4 {
    case 0:
      // Scoped: closed gracefully when the body returns, and waited for.
      try await Sub0Socket.withSocket(Sub0Handler(subscriptions: [[]]), loop: clientLoop) { sub in
        try sub.dial(url)
        try await take(wanted, from: sub)
      }
    case 1:
      // Aborted, and waited for.
      let sub = try Sub0Socket(Sub0Handler(subscriptions: [[]]), loop: clientLoop)
      try sub.dial(url)
      try await take(wanted, from: sub)
      await sub.abortAndWait()
    case 2:
      // Stops reading while the publisher goes on (its copies queue up on
      // the way), then vanishes: dropped, so its deinit aborts it.
      let sub = try Sub0Socket(Sub0Handler(subscriptions: [[]]), loop: clientLoop)
      _ = sub.fileDescriptor
      try sub.dial(url)
      try await take(wanted, from: sub)
      try await Task.sleep(for: .milliseconds(100))
    default:
      // Closed gracefully, not waited for.
      let sub = try Sub0Socket(Sub0Handler(subscriptions: [[]]), loop: clientLoop)
      try sub.dial(url)
      try await take(wanted, from: sub)
      try sub.close()
    }
  }

  /// Receives `count` messages on `sub`, checking their order.
  private func take(_ count: Int, from sub: Sub0Socket) async throws {
    var last: UInt64 = 0
    for _ in 0..<count {
      guard let message = try await sub.receive() else { throw SoakError("the SUB socket reached its end") }
      try SoakRig.check(message, after: &last)
    }
  }

  /// A subscriber's next message must be whole and come after the last one
  /// (the publisher may drop copies for it, never reorder or repeat them).
  static func check(_ message: [UInt8], after last: inout UInt64) throws(SoakError) {
    guard message.count == messageSize else {
      throw SoakError("a message of \(message.count) bytes, not \(messageSize)")
    }
    let sequence = message.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    guard sequence > last else { throw SoakError("message \(sequence) after message \(last): reordered or repeated") }
    last = sequence
  }

  // MARK: Timers

  /// Many short timers on both loops, scheduled and cancelled from off the
  /// loops; and a ring of far timers, cancelled as it turns, so the timer
  /// heaps always hold cancelled entries between compactions. Every timer
  /// is counted as it is scheduled, and again when it runs or its cancel
  /// succeeds (``settleTimers()`` checks the sums).
  func churnTimers() async {
    let counters = self.counters
    var far: [EventLoop.Scheduled] = []
    var round = 0
    do {
      while !Task.isCancelled {
        round += 1
        let loop = round % 2 == 0 ? serverLoop : clientLoop
        var batch: [EventLoop.Scheduled] = []
        batch.reserveCapacity(SoakRig.timersPerRound)
        for _ in 0..<SoakRig.timersPerRound {
          counters.timersScheduled.add(1, ordering: .relaxed)
          let timer = try loop.schedule(after: .microseconds(Int.random(in: 0...5_000))) {
            _ = counters.timersFired.add(1, ordering: .relaxed)
          }
          batch.append(timer)
        }
        cancel(batch[..<(batch.count / 2)])
        try await Task.sleep(for: .milliseconds(Int.random(in: 1...4)))
        cancel(batch[(batch.count / 2)..<(batch.count * 3 / 4)])
        if far.count >= SoakRig.farTimers {
          cancel(far[..<SoakRig.farTimersPerRound])
          far.removeFirst(SoakRig.farTimersPerRound)
        }
        for _ in 0..<SoakRig.farTimersPerRound {
          counters.timersScheduled.add(1, ordering: .relaxed)
          let timer = try loop.schedule(after: .seconds(365 * 86_400)) {
            _ = counters.timersFired.add(1, ordering: .relaxed)
          }
          far.append(timer)
        }
        try await Task.sleep(for: .milliseconds(5))
      }
    } catch {
      if !Task.isCancelled { failures.record("timers", error) }
    }
    cancel(far[...])
  }

  private func cancel(_ timers: ArraySlice<EventLoop.Scheduled>) {
    for timer in timers {
      if timer.cancel() { counters.timersCancelled.add(1, ordering: .relaxed) }
    }
  }
}
