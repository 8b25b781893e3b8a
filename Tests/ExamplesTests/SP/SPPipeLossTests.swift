import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

// A pipe that goes with writes still queued drops them. The SP handlers
// count those in `lostWithPipes` (SPPipes.removed returns them, the SP
// header excepted), so that a sender's accepted messages add up: handed to
// the kernel, or counted lost. Before, PUSH, PAIR, PUB, BUS, SURVEYOR, REP
// and RESPONDENT lost them silently (StreamTransport.close and
// MemoryTransport drop their queues; no handler looked).

@Suite("SP handlers count what a pipe took with it", .timeLimit(.minutes(2)), .testThreads)
struct SPPipeLossTests {
  enum Kind: String, CaseIterable, Sendable { case tcp, inproc }

  /// Small watermarks, so the queues fill with a few hundred messages.
  static let small = SocketOptions(
    receiveHighWatermark: 16 * 1024, receiveLowWatermark: 4 * 1024,
    sendHighWatermark: 32 * 1024, sendLowWatermark: 8 * 1024)

  @Test("PUSH: what its pipe still held when the PULL went is counted in lostWithPipes", arguments: Kind.allCases)
  func push(kind: Kind) async throws {
    try await withSPLoop { loop in
      let push = try Socket(Push0Handler(), loop: loop, options: Self.small)
      let pull = try Socket(Pull0Handler(), loop: loop, options: Self.small)
      defer {
        push.abort()
        pull.abort()
      }
      // No re-dial within the test: the loss is the only thing that happens.
      try push.dial(try listenURL(pull, kind), reconnect: ReconnectPolicy(minimum: .seconds(60)))
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await push.withHandler { h, _ in h.pipes.ready.count }) == 1
        })

      // The PULL's application never receives: its queue, the buffers in
      // between, then the PUSH's pipe and send queue fill.
      let payload = [UInt8](repeating: 0x70, count: 2048)
      var accepted = 0
      var stalled = false
      while !stalled && accepted < 40_000 {
        if try push.trySend(payload) {
          accepted += 1
          continue
        }
        let moving = await waitUntil(.seconds(2)) { push.readiness.contains(.writable) }
        stalled = !moving
      }
      #expect(stalled, "still writable after \(accepted) messages of 2 KiB")
      let queued = try await settledQueue(push)
      #expect(queued > 0, "the pipe holds nothing")
      let before = try await push.withHandler { h, _ in h.statistics }
      #expect(before.lostWithPipes == 0, "\(before)")

      pull.abort()
      #expect(await waitUntil(.seconds(10)) { push.pipeCount == 0 })
      let after = try await push.withHandler { h, _ in h.statistics }
      #expect(after.lostWithPipes == queued, "\(after); \(queued) were queued")
      #expect(after.sent == before.sent, "\(after)")
      // Every accepted message is accounted for at the sender: taken by the
      // handler (handed to the kernel or lost with the pipe), or still
      // waiting in the send queue for the next pipe.
      #expect(push.statistics.messagesSent == after.sent)
      #expect(after.sent <= accepted)
    }
  }

  @Test("PUB: copies its subscriber's pipe still held when the SUB went are counted", arguments: Kind.allCases)
  func pub(kind: Kind) async throws {
    try await withSPLoop { loop in
      let pub = try Socket(Pub0Handler(), loop: loop, options: Self.small)
      let sub = try Socket(Sub0Handler(subscriptions: [[]]), loop: loop, options: Self.small)
      defer {
        pub.abort()
        sub.abort()
      }
      try sub.dial(try listenURL(pub, kind), reconnect: ReconnectPolicy(minimum: .seconds(60)))
      #expect(
        await waitUntilAsync(.seconds(10)) {
          (try? await pub.withHandler { h, _ in h.pipes.ready.count }) == 1
        })

      // The SUB never receives: PUB's copies pile up in the pipe until it
      // stops being writable, and PUB starts dropping (counted in drops).
      let payload = [UInt8](repeating: 0x71, count: 2048)
      var published = 0
      while published < 40_000 {
        guard try pub.trySend(payload) else {
          // The send queue is full for a moment: the loop takes them all.
          _ = await waitUntil(.seconds(5)) { pub.readiness.contains(.writable) }
          continue
        }
        published += 1
        if published % 64 == 0, try await pub.withHandler({ h, _ in h.statistics.drops }) > 0 { break }
      }
      let queued = try await settledQueue(pub)
      #expect(queued > 0, "the pipe holds nothing after \(published) published")
      let before = try await pub.withHandler { h, _ in h.statistics }
      #expect(before.drops > 0 && before.lostWithPipes == 0, "\(before)")

      sub.abort()
      #expect(await waitUntil(.seconds(10)) { pub.pipeCount == 0 })
      let after = try await pub.withHandler { h, _ in h.statistics }
      #expect(after.lostWithPipes == queued, "\(after); \(queued) were queued")
      // Every published message is a copy written (handed on, or lost with
      // the pipe) or a counted drop: nothing is unaccounted for.
      #expect(after.delivered + after.drops == after.published, "\(after)")
    }
  }

  @Test("a pipe that goes once its output was handed on counts nothing lost")
  func nothingQueued() async throws {
    try await withSPLoop { loop in
      let push = try Socket(Push0Handler(), loop: loop)
      let pull = try Socket(Pull0Handler(), loop: loop)
      defer {
        push.abort()
        pull.abort()
      }
      try push.dial(try listenURL(pull, .tcp), reconnect: ReconnectPolicy(minimum: .seconds(60)))
      for i in 0..<10 { #expect(try push.trySend(utf8("job \(i)"))) }
      for i in 0..<10 { #expect(string(try await nextSPMessage(pull)) == "job \(i)") }
      pull.abort()
      #expect(await waitUntil(.seconds(10)) { push.pipeCount == 0 })
      let stats = try await push.withHandler { h, _ in h.statistics }
      #expect(stats.sent == 10 && stats.lostWithPipes == 0, "\(stats)")
    }
  }
}

/// Where to dial `socket`, which listens on a fresh address of `kind`.
private func listenURL<H>(_ socket: Socket<H>, _ kind: SPPipeLossTests.Kind) throws -> String {
  switch kind {
  case .tcp: return try dialURL(try socket.listen("tcp://127.0.0.1:0"))
  case .inproc:
    let url = "inproc://sp-loss-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try socket.listen(url)
    return url
  }
}

/// The writes `socket`'s only pipe holds, once that stopped changing (its
/// peer stopped reading and every buffer in between is full).
private func settledQueue<H>(_ socket: Socket<H>) async throws -> Int {
  var last = -1
  for _ in 0..<50 {
    let now = try await socket.withHandler { _, context in context.pipes.first?.queuedOutputMessages ?? -1 }
    if now == last { return now }
    last = now
    try? await Task.sleep(for: .milliseconds(200))
  }
  return last
}
