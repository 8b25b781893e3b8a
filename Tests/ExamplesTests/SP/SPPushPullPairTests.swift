import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

@Suite("SP PUSH/PULL and PAIR handlers on pipe sockets", .timeLimit(.minutes(2)), .testThreads)
struct SPPushPullPairTests {
  enum Kind: String, CaseIterable, Sendable { case tcp, ipc, inproc }

  @Test("PUSH to three PULLs over tcp: round robin, none lost or duplicated")
  func roundRobin() async throws {
    try await withSPLoop { loop in
      let push = try Socket(Push0Handler(), loop: loop)
      let pulls = try (0..<3).map { _ in try Socket(Pull0Handler(), loop: loop) }
      defer {
        push.abort()
        for pull in pulls { pull.abort() }
      }
      for pull in pulls { try push.dial(try dialURL(try pull.listen("tcp://127.0.0.1:0"))) }
      #expect(await waitUntilAsync(.seconds(10)) { await readyPushPipes(push) == 3 })

      let total = 300
      for i in 0..<total { try await push.send(utf8("job \(i)")) }
      var got: [[String]] = Array(repeating: [], count: pulls.count)
      let all = try await waitUntil(.seconds(20), every: .milliseconds(2)) {
        for (n, pull) in pulls.enumerated() { try takeQueued(pull, into: &got[n]) }
        return got.reduce(0) { $0 + $1.count } >= total
      }
      #expect(all, "\(got.map(\.count)) of \(total)")
      // Nothing more comes (a duplicate would).
      try? await Task.sleep(for: .milliseconds(200))
      for (n, pull) in pulls.enumerated() { try takeQueued(pull, into: &got[n]) }

      for (n, share) in got.enumerated() {
        #expect((90...110).contains(share.count), "PULL \(n) got \(share.count)")
        // Each PULL's share comes in the order it was sent.
        let numbers = share.compactMap { Int($0.dropFirst(4)) }
        #expect(numbers.count == share.count && numbers == numbers.sorted(), "PULL \(n): \(share)")
      }
      let union = got.flatMap { $0 }
      #expect(union.count == total)
      #expect(Set(union) == Set((0..<total).map { "job \($0)" }))

      let stats = try await push.withHandler { h, _ in (h.statistics, Array(h.sentPerPipe.values)) }
      #expect(stats.0.sent == total && stats.0.ignoredMessages == 0, "\(stats)")
      #expect(stats.1.count == 3 && stats.1.allSatisfy { (90...110).contains($0) }, "\(stats.1)")
      #expect(push.statistics.messagesSent == total)
      var received = 0
      for pull in pulls { received += try await pull.withHandler { h, _ in h.statistics.received } }
      #expect(received == total)
    }
  }

  @Test("PUSH with no PULL holds its sends and its fd stops showing writable; a PULL then gets everything in order")
  func heldWithoutPipe() async throws {
    try await withSPLoop { loop in
      let options = SocketOptions(sendHighWatermark: 8 * 1024, sendLowWatermark: 2 * 1024)
      let push = try Socket(Push0Handler(), loop: loop, options: options)
      let pull = try Socket(Pull0Handler(), loop: loop)
      defer {
        push.abort()
        pull.abort()
      }
      let fd = push.fileDescriptor
      let url = try dialURL(try push.listen("tcp://127.0.0.1:0"))
      #expect(isWritable(fd))

      let padding = [UInt8](repeating: 0x2e, count: 100)
      func job(_ n: Int) -> [UInt8] { utf8("held \(n) ") + padding }
      var accepted = 0
      while accepted < 10_000, try push.trySend(job(accepted)) { accepted += 1 }
      #expect(accepted > 0 && accepted < 10_000)
      #expect(!push.readiness.contains(.writable))
      #expect(!isWritable(fd))
      // It stays so: no pipe can take a message.
      try? await Task.sleep(for: .milliseconds(200))
      #expect(!isWritable(fd))
      #expect(push.statistics.messagesSent == 0)
      let held = try await push.withHandler { h, _ in h.statistics }
      #expect(held.heldBack == 1 && held.sent == 0, "\(held)")

      try pull.dial(url)
      for n in 0..<accepted {
        let message = try #require(try await nextSPMessage(pull), "message \(n) of \(accepted) never came")
        #expect(message == job(n), "message \(n)")
      }
      #expect(await waitUntil(.seconds(5)) { push.readiness.contains(.writable) })
      #expect(isWritable(fd))
      #expect(try push.trySend(utf8("after")))
      #expect(string(try await nextSPMessage(pull)) == "after")
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try pull.tryReceive() == .wouldBlock)
      let stats = try await push.withHandler { h, _ in h.statistics }
      #expect(stats.sent == accepted + 1 && stats.heldBack >= 1, "\(stats)")
    }
  }

  @Test("PUSH whose only PULL stops reading stops showing writable; nothing it accepted is lost once the PULL drains")
  func stalledPull() async throws {
    try await withSPLoop { loop in
      let small = SocketOptions(
        receiveHighWatermark: 64 * 1024, receiveLowWatermark: 16 * 1024,
        sendHighWatermark: 64 * 1024, sendLowWatermark: 16 * 1024)
      let push = try Socket(Push0Handler(), loop: loop, options: small)
      let pull = try Socket(Pull0Handler(), loop: loop, options: small)
      defer {
        push.abort()
        pull.abort()
      }
      let fd = push.fileDescriptor
      try push.dial(try dialURL(try pull.listen("tcp://127.0.0.1:0")))
      #expect(await waitUntilAsync(.seconds(10)) { await readyPushPipes(push) == 1 })

      // The application never receives from the PULL: its queue, then the
      // kernel's buffers, then the PUSH's pipe and send queue fill.
      let payload = [UInt8](repeating: 0x70, count: 16 * 1024)
      func job(_ n: Int) -> [UInt8] { spWord(UInt32(n)) + payload }
      var accepted = 0
      var stalled = false
      while !stalled && accepted < 8000 {
        if try push.trySend(job(accepted)) {
          accepted += 1
          continue
        }
        // Full: the loop is moving the queue along, or the PULL stalled.
        let moving = await waitUntil(.seconds(3)) { push.readiness.contains(.writable) }
        stalled = !moving
      }
      #expect(stalled, "still writable after \(accepted) messages of 16 KiB")
      #expect(!isWritable(fd))
      let held = try await push.withHandler { h, _ in h.statistics }
      #expect(held.heldBack >= 1 && held.sent < accepted, "\(held), \(accepted) accepted")

      // The PULL drains: every accepted message, in order, none twice.
      for n in 0..<accepted {
        let message = try #require(try await nextSPMessage(pull), "message \(n) of \(accepted) never came")
        let good = Array(message.prefix(4)) == spWord(UInt32(n)) && message.count == payload.count + 4
        #expect(good, "message \(n) of \(accepted): \(message.prefix(4))")
        if !good { break }
      }
      #expect(await waitUntil(.seconds(5)) { push.readiness.contains(.writable) })
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try pull.tryReceive() == .wouldBlock)
      let stats = try await push.withHandler { h, _ in h.statistics }
      #expect(stats.sent == accepted, "\(stats)")
    }
  }

  @Test("PULL from two PUSH sockets gets both streams, each in order; PULL does not send")
  func twoPushers() async throws {
    try await withSPLoop { loop in
      let pull = try Socket(Pull0Handler(), loop: loop)
      let pushes = try (0..<2).map { _ in try Socket(Push0Handler(), loop: loop) }
      defer {
        pull.abort()
        for push in pushes { push.abort() }
      }
      let url = try dialURL(try pull.listen("tcp://127.0.0.1:0"))
      for push in pushes { try push.dial(url) }
      do {
        _ = try pull.trySend(utf8("PULL does not send"))
        Issue.record("a PULL socket took a send")
      } catch {
        #expect((error as? SocketError) == .notSupported("this socket type does not send messages"), "\(error)")
      }

      // Sent at once: held until each PUSH's pipe is up.
      let count = 200
      for (n, push) in pushes.enumerated() {
        for i in 0..<count { #expect(try push.trySend(utf8("\(n):\(i)"))) }
      }
      var got: [String] = []
      let all = try await waitUntil(.seconds(20), every: .milliseconds(2)) {
        try takeQueued(pull, into: &got)
        return got.count >= 2 * count
      }
      #expect(all, "\(got.count) of \(2 * count)")
      try? await Task.sleep(for: .milliseconds(100))
      try takeQueued(pull, into: &got)
      #expect(got.count == 2 * count)
      for n in 0..<2 {
        let stream = got.filter { $0.hasPrefix("\(n):") }
        #expect(stream == (0..<count).map { "\(n):\($0)" }, "stream \(n)")
      }
      let stats = try await pull.withHandler { h, _ in (h.statistics, Array(h.receivedPerPipe.values)) }
      #expect(stats.0.received == 2 * count && stats.1.sorted() == [count, count], "\(stats)")
      #expect(pull.statistics.pipes == 2)
    }
  }

  @Test("PUSH discards what a PULL peer sends, as NNG does, and never shows readable")
  func pushDiscards() async throws {
    try await withSPLoop { loop in
      let push = try Socket(Push0Handler(), loop: loop)
      defer { push.abort() }
      let fd = push.fileDescriptor
      let bound = try push.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try raw.send(spHeader(0x51))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x50))
      try raw.send(spLength(5) + utf8("stray") + spLength(0))
      #expect(
        await waitUntilAsync(.seconds(5)) {
          (try? await push.withHandler { h, _ in h.statistics.ignoredMessages }) == 2
        })
      #expect(try push.tryReceive() == .wouldBlock)
      #expect(pollEvents(fd) & Int16(POLLIN) == 0)
      #expect(try push.trySend(utf8("to the raw PULL")))
      #expect(await raw.readFrame(within: .seconds(5)) == utf8("to the raw PULL"))
      #expect(push.statistics.pipeFailures == 0)
    }
  }

  @Test("PAIR between our sockets: messages both ways, sends made before the peer is up held", arguments: Kind.allCases)
  func pair(kind: Kind) async throws {
    try await withSPLoop { loop in
      let a = try Socket(Pair0Handler(), loop: loop)
      let b = try Socket(Pair0Handler(), loop: loop)
      defer {
        a.abort()
        b.abort()
      }
      let url: String
      switch kind {
      case .tcp: url = try dialURL(try a.listen("tcp://127.0.0.1:0"))
      case .ipc:
        let path = freshIPCPath("pair")
        try a.listen("ipc://" + path)
        url = "ipc://" + path
      case .inproc:
        url = "inproc://sp-pair-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try a.listen(url)
      }
      for i in 0..<10 { #expect(try a.trySend(utf8("a\(i) over \(kind)"))) }
      try b.dial(url)
      for i in 0..<10 { #expect(try b.trySend(utf8("b\(i) over \(kind)"))) }
      for i in 0..<10 { #expect(string(try await nextSPMessage(b)) == "a\(i) over \(kind)") }
      for i in 0..<10 { #expect(string(try await nextSPMessage(a)) == "b\(i) over \(kind)") }
      try? await Task.sleep(for: .milliseconds(100))
      #expect(try a.tryReceive() == .wouldBlock)
      #expect(try b.tryReceive() == .wouldBlock)
      let sa = try await a.withHandler { h, _ in h.statistics }
      let sb = try await b.withHandler { h, _ in h.statistics }
      #expect(sa.sent == 10 && sa.received == 10 && sa.heldBack >= 1, "\(sa)")
      #expect(sb.sent == 10 && sb.received == 10, "\(sb)")
      #expect(sa.refusedPipes == 0 && sb.refusedPipes == 0 && sa.peersPaired == 1 && sb.peersPaired == 1)
    }
  }

  @Test("PAIR refuses a second peer while the first is up; the first keeps working; the refused one takes over later")
  func pairRefusesSecond() async throws {
    try await withSPLoop { loop in
      let a = try Socket(Pair0Handler(), loop: loop)
      let b = try Socket(Pair0Handler(), loop: loop)
      let c = try Socket(Pair0Handler(), loop: loop)
      defer {
        a.abort()
        b.abort()
        c.abort()
      }
      let url = try dialURL(try a.listen("tcp://127.0.0.1:0"))
      try b.dial(url)
      #expect(try b.trySend(utf8("b: hello")))
      #expect(string(try await nextSPMessage(a)) == "b: hello")
      let first = try #require(try await a.withHandler { h, _ in h.peer?.id })

      try c.dial(url, reconnect: ReconnectPolicy(minimum: .milliseconds(50)))
      func refusals() async -> Int { (try? await a.withHandler { h, _ in h.statistics.refusedPipes }) ?? 0 }
      #expect(await waitUntilAsync(.seconds(10)) { await refusals() >= 2 })
      let reasons = (try? await a.withHandler { h, _ in h.pipes.recentFailures }) ?? []
      #expect(reasons.contains { $0.contains("PAIR v0 takes one peer at a time") }, "\(reasons)")

      // The first peer is undisturbed, both ways.
      #expect(try await a.withHandler { h, _ in h.peer?.id } == first)
      for i in 0..<5 {
        #expect(try a.trySend(utf8("a: \(i)")))
        #expect(string(try await nextSPMessage(b)) == "a: \(i)")
        #expect(try b.trySend(utf8("b: \(i)")))
        #expect(string(try await nextSPMessage(a)) == "b: \(i)")
      }
      #expect(try c.tryReceive() == .wouldBlock)
      #expect(try await b.withHandler { h, _ in h.statistics.refusedPipes } == 0)

      // Once the first peer goes, the refused dialer takes its place.
      b.abort()
      #expect(
        await waitUntilAsync(.seconds(10)) {
          let id = try? await a.withHandler { h, _ in h.peer?.id }
          return id != nil && id != first
        })
      #expect(
        await waitUntilAsync(.seconds(10)) { (try? await c.withHandler { h, _ in h.peer != nil }) == true })
      #expect(try c.trySend(utf8("c: hello")))
      #expect(string(try await nextSPMessage(a)) == "c: hello")
      #expect(try a.trySend(utf8("a: to c")))
      #expect(string(try await nextSPMessage(c)) == "a: to c")
      let stats = try await a.withHandler { h, _ in h.statistics }
      #expect(stats.peersPaired == 2 && stats.refusedPipes >= 2, "\(stats)")
    }
  }

  @Test("wrong peer protocols fail the pipe with a clear error; a held message then goes to a good peer")
  func wrongPeers() async throws {
    try await withSPLoop { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      let push = try Socket(Push0Handler(), loop: loop)
      let pull = try Socket(Pull0Handler(), loop: loop)
      let pair = try Socket(Pair0Handler(), loop: loop)
      defer {
        rep.abort()
        push.abort()
        pull.abort()
        pair.abort()
      }
      func pushFailures() async -> [String] { (try? await push.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      func repFailures() async -> [String] { (try? await rep.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      func pullFailures() async -> [String] { (try? await pull.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      func pairFailures() async -> [String] { (try? await pair.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }

      // A PUSH dialing a REP: both sides refuse the other's header.
      try push.dial(
        try dialURL(try rep.listen("tcp://127.0.0.1:0")), reconnect: ReconnectPolicy(minimum: .seconds(30)))
      #expect(try push.trySend(utf8("kept")))
      let pushReason = "incompatible SP peer: protocol 0x31 (REP), push needs 0x51 (PULL)"
      let pushSaw = await waitUntilAsync(.seconds(10)) { await pushFailures().contains { $0.contains(pushReason) } }
      let pushReasons = await pushFailures()
      #expect(pushSaw, "\(pushReasons)")
      let repReason = "incompatible SP peer: protocol 0x50 (PUSH), rep needs 0x30 (REQ)"
      let repSaw = await waitUntilAsync(.seconds(10)) { await repFailures().contains { $0.contains(repReason) } }
      let repReasons = await repFailures()
      #expect(repSaw, "\(repReasons)")
      #expect(push.statistics.pipeFailures >= 1)
      let held = try await push.withHandler { h, _ in h.statistics }
      #expect(held.sent == 0 && held.heldBack == 1, "\(held)")

      // A REQ where a PUSH should be, and where a PAIR should be.
      let pullBound = try pull.listen("tcp://127.0.0.1:0")
      let pairBound = try pair.listen("tcp://127.0.0.1:0")
      for (bound, ours) in [(pullBound, UInt16(0x51)), (pairBound, UInt16(0x10))] {
        guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
        let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
        try raw.send(spHeader(0x30))
        let end = await raw.waitForClose(within: .seconds(10))
        #expect(end.closure != nil, "our side kept the connection")
        #expect(end.bytes == spHeader(ours), "\(end.bytes)")
      }
      let pullReason = "incompatible SP peer: protocol 0x30 (REQ), pull needs 0x50 (PUSH)"
      let pullSaw = await waitUntilAsync(.seconds(5)) { await pullFailures().contains { $0.contains(pullReason) } }
      let pullReasons = await pullFailures()
      #expect(pullSaw, "\(pullReasons)")
      let pairReason = "incompatible SP peer: protocol 0x30 (REQ), pair needs 0x10 (PAIR)"
      let pairSaw = await waitUntilAsync(.seconds(5)) { await pairFailures().contains { $0.contains(pairReason) } }
      let pairReasons = await pairFailures()
      #expect(pairSaw, "\(pairReasons)")

      // The message the PUSH held all along reaches the first good peer.
      try push.dial(try dialURL(pullBound))
      #expect(string(try await nextSPMessage(pull)) == "kept")
      let stats = try await push.withHandler { h, _ in h.statistics }
      #expect(stats.sent == 1, "\(stats)")
    }
  }
}

// MARK: - Helpers

/// Moves every message queued on `socket` into `messages`, as text.
private func takeQueued<H>(_ socket: Socket<H>, into messages: inout [String]) throws {
  while case .message(let m) = try socket.tryReceive() { messages.append(string(m) ?? "") }
}

/// Pipes of `push` whose SP handshake completed.
private func readyPushPipes(_ push: Push0Socket) async -> Int {
  (try? await push.withHandler { h, _ in h.pipes.ready.count }) ?? -1
}

/// Whether `fd` polls writable right now.
private func isWritable(_ fd: Int32) -> Bool { pollEvents(fd, Int16(POLLOUT)) & Int16(POLLOUT) != 0 }
