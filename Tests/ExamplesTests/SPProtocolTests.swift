import ExampleProtocols
import Glibc
import Locking
import TestSupport
import Testing
import UserProto

/// The SP behaviours themselves, checked byte for byte against raw TCP peers
/// written by hand: request ids, resending, backtraces, header parsing, and
/// what servers do with requests and subscribers they cannot serve.
@Suite("SP protocol behaviour against raw TCP peers", .timeLimit(.minutes(1)), .testThreads)
struct SPProtocolTests {
  static let reqHeader = spHeader(0x30)
  static let repHeader = spHeader(0x31)
  static let subHeader = spHeader(0x21)

  /// Our REQ connected to a raw REP that has sent its header.
  static func reqAgainstRawRep(_ loop: EventLoop) async throws -> (ReqSocket, RawClient, RawListener) {
    let listener = try RawListener()
    let req = try ReqSocket.connect(to: listener.address, loop: loop)
    let rep = try #require(await listener.accept(within: .seconds(5)))
    #expect(await rep.read(8, within: .seconds(5)).bytes == reqHeader)
    try rep.send(repHeader)
    return (req, rep, listener)
  }

  // MARK: REQ

  @Test("request ids have the top bit set and increment by one", arguments: interopBackends)
  func requestIDs(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      var ids: [UInt32] = []
      for n in 0..<4 {
        #expect(try req.trySend(Array("q\(n)".utf8)))
        let frame = await rep.readFrame(within: .seconds(5))
        let (id, body) = try #require(frame.flatMap(splitRequest))
        #expect(body == Array("q\(n)".utf8))
        ids.append(id)
        try rep.send(spRequest(id: id, Array("a\(n)".utf8)))
        #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("a\(n)".utf8)))
      }
      #expect(ids.allSatisfy { $0 & 0x8000_0000 != 0 }, "\(ids)")
      for (a, b) in zip(ids, ids.dropFirst()) { #expect(b == (a &+ 1) | 0x8000_0000, "\(ids)") }
      #expect(req.ignoredReplies == 0 && req.resends == 0)
    }
  }

  @Test("an unanswered request is sent again, byte for byte, with the same id", arguments: interopBackends)
  func resend(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      req.resendInterval = .milliseconds(100)
      #expect(try req.trySend(Array("again".utf8)))
      let first = try #require(await rep.readFrame(within: .seconds(5)))
      // No answer: the same frame comes again.
      let second = try #require(await rep.readFrame(within: .seconds(5)))
      #expect(second == first)
      #expect(req.resends >= 1)
      let (id, _) = try #require(splitRequest(first))
      try rep.send(spRequest(id: id, Array("done".utf8)))
      #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("done".utf8)))
    }
  }

  @Test("a new request drops the replies to the previous one: queued, and arriving late", arguments: interopBackends)
  func abandonedReplies(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      #expect(try req.trySend(Array("first".utf8)))
      let (first, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      try rep.send(spRequest(id: first, Array("reply to first".utf8)))
      // The reply is queued (the fd turns readable) and nobody receives it.
      #expect(await waitUntil(.seconds(5)) { pollEvents(req.fileDescriptor) & Int16(POLLIN) != 0 })
      #expect(try req.trySend(Array("second".utf8)))
      // The send abandoned the first request: its queued reply is gone, and
      // the fd says so as soon as the send returns.
      #expect(pollEvents(req.fileDescriptor) & Int16(POLLIN) == 0)
      #expect(try req.tryReceive() == .wouldBlock)
      #expect(req.ignoredReplies == 1)
      let (second, _) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
      #expect(second != first)
      // A late duplicate of the first reply, then the second's own.
      try rep.send(spRequest(id: first, Array("late".utf8)))
      try rep.send(spRequest(id: second, Array("reply to second".utf8)))
      #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("reply to second".utf8)))
      #expect(req.ignoredReplies == 2)
      #expect(try req.tryReceive() == .wouldBlock)
    }
  }

  @Test(
    "a REQ whose replies are handled on the loop can send the next request from its handler",
    arguments: interopBackends)
  func requestsFromLoopHandler(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      final class Replies: Sendable { let list = Lock<[String]>([]) }
      let replies = Replies()
      try await loop.submit {
        req.handleMessagesOnLoop { socket, reply in
          let count = replies.list.withLock { r -> Int in
            r.append(String(decoding: reply, as: UTF8.self))
            return r.count
          }
          // The handler runs inside the reply's delivery; sending from it
          // must not deadlock on REQ's request lock.
          if count < 3 { _ = try? socket.trySend(Array("q\(count)".utf8)) }
        }
      }
      #expect(try req.trySend(Array("q0".utf8)))
      for n in 0..<3 {
        let (id, body) = try #require(await rep.readFrame(within: .seconds(5)).flatMap(splitRequest))
        #expect(body == Array("q\(n)".utf8))
        try rep.send(spRequest(id: id, Array("a\(n)".utf8)))
      }
      #expect(await waitUntil(.seconds(5)) { replies.list.withLock { $0.count } == 3 })
      #expect(replies.list.withLock { $0 } == ["a0", "a1", "a2"])
      #expect(req.ignoredReplies == 0)
    }
  }

  @Test("a resend interval of zero never resends (no tight loop)")
  func zeroResendInterval() async throws {
    try await withLoop(.epoll) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      req.resendInterval = .zero
      #expect(try req.trySend(Array("once".utf8)))
      let first = await rep.readFrame(within: .seconds(5))
      #expect(first.flatMap(splitRequest)?.body == Array("once".utf8))
      // Nothing more comes while the request waits.
      #expect(await rep.read(1, within: .milliseconds(300)).bytes.isEmpty)
      #expect(req.resends == 0)
    }
  }

  @Test("a reply to an earlier request is ignored and counted", arguments: interopBackends)
  func staleReply(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      #expect(try req.trySend(Array("one".utf8)))
      let firstFrame = await rep.readFrame(within: .seconds(5))
      let (first, _) = try #require(firstFrame.flatMap(splitRequest))
      try rep.send(spRequest(id: first, Array("reply one".utf8)))
      #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("reply one".utf8)))

      #expect(try req.trySend(Array("two".utf8)))
      let secondFrame = await rep.readFrame(within: .seconds(5))
      let (second, _) = try #require(secondFrame.flatMap(splitRequest))
      // The first reply again (stale), then the right one.
      try rep.send(spRequest(id: first, Array("reply one again".utf8)) + spRequest(id: second, Array("reply two".utf8)))
      #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("reply two".utf8)))
      #expect(req.ignoredReplies == 1)
      #expect(try req.tryReceive() == .wouldBlock)
    }
  }

  @Test("REQ stops resending once its connection failed", arguments: interopBackends)
  func resendStopsOnFailure(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await Self.reqAgainstRawRep(loop)
      defer { req.abort() }
      req.resendInterval = .milliseconds(20)
      #expect(try req.trySend(Array("x".utf8)))
      _ = try #require(await rep.readFrame(within: .seconds(5)))
      // An oversize frame fails the connection.
      try rep.send(spLength(2 << 20))
      #expect(await waitUntil(.seconds(5)) { if case .failed = req.connectionState { true } else { false } })
      let resends = req.resends
      // Ten resend intervals later, nothing was resent.
      try await Task.sleep(for: .milliseconds(200))
      #expect(req.resends == resends)
      #expect(req.connectionState == .failed(.messageTooLarge(size: 2 << 20, limit: 1 << 20)))
    }
  }

  // MARK: REP (the echo server)

  @Test("a 3-word backtrace (two hops and the id) comes back exactly", arguments: interopBackends)
  func multiHopBacktrace(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      let payload = spWord(0x0000_0011) + spWord(0x0000_0022) + spWord(0x8000_0033) + Array("hop hop".utf8)
      try raw.send(Self.reqHeader + spLength(UInt64(payload.count)) + payload)
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      #expect(await raw.readFrame(within: .seconds(5)) == payload)
      #expect(server.requestsServed == 1)
    }
  }

  @Test("8 backtrace words are served; 9 are dropped and counted, and the connection stays", arguments: interopBackends)
  func hopLimit(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      func request(hops: Int, id: UInt32, _ body: String) -> [UInt8] {
        let payload = (0..<hops).flatMap { spWord(UInt32($0 + 1)) } + spWord(id) + Array(body.utf8)
        return spLength(UInt64(payload.count)) + payload
      }
      let eight = request(hops: 7, id: 0x8000_0001, "eight")
      let nine = request(hops: 8, id: 0x8000_0002, "nine")
      let after = request(hops: 0, id: 0x8000_0003, "after")
      try raw.send(Self.reqHeader + eight + nine + after)
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      // The next two replies: the 8-word request's, then the one after (the
      // 9-word request got none).
      #expect(await raw.readFrame(within: .seconds(5)) == Array(eight.dropFirst(8)))
      #expect(await raw.readFrame(within: .seconds(5)) == Array(after.dropFirst(8)))
      #expect(server.requestsServed == 2)
      #expect(server.connections.map(\.droppedRequests) == [1])
      #expect(server.failures.count == 0)
    }
  }

  @Test("the SP header may arrive one byte at a time", arguments: interopBackends)
  func headerByteByByte(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      // A generous header timeout: on a loaded machine the sleeps between
      // bytes can add up to seconds.
      let server = try EchoServer(on: try loopback(0), loop: loop, headerTimeout: .seconds(120))
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      for byte in Self.reqHeader {
        try raw.send([byte])
        try await Task.sleep(for: .milliseconds(5))
      }
      let request = spRequest(id: 0x8000_0042, Array("slow".utf8))
      for byte in request {
        try raw.send([byte])
        try await Task.sleep(for: .milliseconds(1))
      }
      #expect(await raw.readFrame(within: .seconds(5)) == Array(request.dropFirst(8)))
      #expect(server.failures.count == 0)
    }
  }

  @Test("a reply that cannot be queued is dropped and counted; later replies keep their own ids")
  func droppedRepliesDoNotShiftLaterOnes() async throws {
    try await withLoop(.epoll) { loop in
      // A 1-byte send queue: while one reply waits for the loop, the next
      // request's reply would block and is dropped.
      let server = try EchoServer(
        on: try loopback(0), loop: loop, options: SocketOptions(sendHighWatermark: 1, sendLowWatermark: 1))
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      let burst = (1...3).map { spRequest(id: 0x8000_0000 + UInt32($0), Array("burst \($0)".utf8)) }
      try raw.send(Self.reqHeader + burst.joined())
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      #expect(await raw.readFrame(within: .seconds(5)) == Array(burst[0].dropFirst(8)))
      #expect(await waitUntil(.seconds(5)) { server.statistics.requestsServed + server.statistics.repliesDropped == 3 })
      let statistics = server.statistics
      #expect(statistics.repliesDropped >= 1, "\(statistics)")
      // Whatever else was answered came in order, each with its own id.
      for request in burst.dropFirst().prefix(statistics.requestsServed - 1) {
        #expect(await raw.readFrame(within: .seconds(5)) == Array(request.dropFirst(8)))
      }
      // A new request gets its own reply, not a dropped one's.
      let next = spRequest(id: 0x8000_0010, Array("next".utf8))
      try raw.send(next)
      #expect(await raw.readFrame(within: .seconds(5)) == Array(next.dropFirst(8)))
    }
  }

  @Test("a failure before the header stays the connection's reason after the header timeout")
  func headerTimerStopsOnFailure() async throws {
    try await withLoop(.epoll) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop, headerTimeout: .milliseconds(3000))
      defer { server.close() }
      // The partial header and the end of stream go out at once, so the
      // connection fails long before its header timer would fire.
      let raw = try RawClient(connectingTo: server.localAddress)
      try raw.send([0x00, 0x53, 0x50])
      raw.shutdownWrite()
      let first = SocketError.protocolViolation("the peer closed after 3 of the 8 SP header bytes")
      #expect(await waitUntil(.seconds(5)) { server.failures.count == 1 }, "\(server.failures.recent)")
      #expect(server.failures.recent == [first])
      // Past the header timeout: a timer left running would fail the
      // connection again and log a second reason.
      try await Task.sleep(for: .milliseconds(3500))
      #expect(server.failures.count == 1)
      #expect(server.failures.recent == [first])
    }
  }

  @Test("a peer that never sends its header is dropped after the header timeout, with that reason")
  func headerTimeout() async throws {
    try await withLoop(.epoll) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop, headerTimeout: .milliseconds(100))
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      let end = await raw.waitForClose(within: .seconds(5))
      #expect(end.bytes == Self.repHeader && end.closure != nil)
      #expect(await waitUntil(.seconds(5)) { server.failures.count == 1 })
      #expect(
        server.failures.recent.map(\.description) == [
          "protocol violation: no SP header from the peer within 0.1 seconds"
        ])
    }
  }

  // MARK: Servers let go of their connections

  @Test("sockets of refused peers are freed (echo server and publisher)", arguments: ["echo", "pub"])
  func refusedPeersAreFreed(server kind: String) async throws {
    try await withLoop(.epoll) { loop in
      let echo = kind == "echo" ? try EchoServer(on: try loopback(0), loop: loop) : nil
      let publisher = kind == "pub" ? try Publisher(on: try loopback(0), loop: loop) : nil
      defer {
        echo?.close()
        publisher?.close()
      }
      let address = try #require(echo?.localAddress ?? publisher?.localAddress)
      let ourHeader = kind == "echo" ? Self.repHeader : spHeader(0x20)
      func open() -> [ProtocolSocket] { echo?.connections ?? publisher?.connections ?? [] }

      final class Weak { weak var socket: ProtocolSocket? }
      var refs: [Weak] = []
      for _ in 0..<20 {
        let raw = try RawClient(connectingTo: address)
        #expect(await raw.read(8, within: .seconds(5)).bytes == ourHeader)
        #expect(await waitUntil(.seconds(5)) { open().count == 1 })
        let ref = Weak()
        ref.socket = open().first
        refs.append(ref)
        try raw.send(spHeader(0x10))  // PAIR: refused by both
        #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
      }
      #expect(await waitUntil(.seconds(5)) { open().isEmpty })
      #expect(
        await waitUntil(.seconds(5)) { refs.allSatisfy { $0.socket == nil } },
        "\(refs.filter { $0.socket != nil }.count) of 20 still alive")
      #expect((echo?.failures ?? publisher?.failures)?.count == 20)
    }
  }

  // MARK: PUB

  @Test("a peer is a subscriber only once its SUB header is accepted", arguments: interopBackends)
  func subscriberCountedAfterHeader(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let publisher = try Publisher(on: try loopback(0), loop: loop)
      defer { publisher.close() }
      let raw = try RawClient(connectingTo: publisher.localAddress)
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x20))
      #expect(await waitUntil(.seconds(5)) { publisher.connectionCount == 1 })
      #expect(publisher.subscriberCount == 0)
      let early = publisher.publish("early")
      #expect(early.delivered == 0 && early.dropped == 0)
      try raw.send(Self.subHeader)
      #expect(await waitUntil(.seconds(5)) { publisher.subscriberCount == 1 })
      let late = publisher.publish("late")
      #expect(late.delivered == 1 && late.dropped == 0)
      #expect(await raw.readFrame(within: .seconds(5)) == Array("late".utf8))
    }
  }

  @Test("a stalled subscriber's drops are counted; the other subscribers lose nothing", arguments: interopBackends)
  func stalledSubscriber(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let publisher = try Publisher(
        on: try loopback(0), loop: loop,
        options: SocketOptions(sendHighWatermark: 64 * 1024, sendLowWatermark: 16 * 1024))
      defer { publisher.close() }
      var healthy: [SubSocket] = []
      defer { for s in healthy { s.abort() } }
      for n in 1...3 {
        let sub = try SubSocket.connect(to: publisher.localAddress, loop: loop)
        sub.subscribe("")
        healthy.append(sub)
        #expect(await waitUntil(.seconds(5)) { publisher.subscriberCount == n })
      }
      // The fourth never reads, with a small kernel receive buffer.
      let stalled = try RawClient(connectingTo: publisher.localAddress, receiveBuffer: 4096)
      try stalled.send(Self.subHeader)
      #expect(await waitUntil(.seconds(5)) { publisher.subscriberCount == 4 })

      let message = [UInt8](repeating: 0x61, count: 16 * 1024)
      var received = [0, 0, 0]
      var published = 0
      // Rounds of three messages (48 KiB, under the 64 KiB queue); the healthy
      // subscribers read each round before the next.
      for _ in 0..<2000 {
        for _ in 0..<3 { publisher.publish(message) }
        published += 3
        let caughtUp = try await waitUntil(.seconds(5)) {
          for (i, sub) in healthy.enumerated() {
            while case .message(let m) = try sub.tryReceive() {
              #expect(m == message)
              received[i] += 1
            }
          }
          return received.allSatisfy { $0 == published }
        }
        #expect(caughtUp, "received \(received) of \(published)")
        if !caughtUp || publisher.subscriberStatistics[3].dropped >= 10 { break }
      }
      let perSubscriber = publisher.subscriberStatistics
      #expect(perSubscriber[3].dropped >= 10, "\(perSubscriber)")
      #expect(perSubscriber.prefix(3).allSatisfy { $0.dropped == 0 && $0.delivered == published }, "\(perSubscriber)")
      #expect(received == [published, published, published])
      #expect(publisher.statistics.dropped == perSubscriber[3].dropped)
    }
  }

  // MARK: SP/IPC framing

  @Test("over ipc:// each message has a type byte of 1; another type fails the connection", arguments: interopBackends)
  func ipcFraming(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let path = "/tmp/userproto-raw-ipc-\(getpid())-\(backend).sock"
      unlink(path)
      let server = try EchoServer(on: try SPAddress.parse("ipc://" + path), loop: loop)
      defer { server.close() }
      let raw = try RawClient(connectingTo: try SocketAddress(unixPath: path))
      let request = spRequest(id: 0x8000_0001, Array("over ipc".utf8))
      try raw.send(Self.reqHeader + [0x01] + request)
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      #expect(await raw.read(1 + request.count, within: .seconds(5)).bytes == [0x01] + request)
      try raw.send([0x02] + request)
      let end = await raw.waitForClose(within: .seconds(5))
      #expect(end.closure != nil && end.bytes.isEmpty)
      #expect(await waitUntil(.seconds(5)) { server.failures.count == 1 })
      #expect(server.failures.recent.map(\.description) == ["protocol violation: SP/IPC message type 2, expected 1"])
      #expect(server.requestsServed == 1)
    }
    #expect(access("/tmp/userproto-raw-ipc-\(getpid())-\(backend).sock", F_OK) != 0, "socket file left behind")
  }

  @Test("over ipc:// a frame cut short counts the 9-byte prefix")
  func ipcTruncation() async throws {
    try await withLoop(.epoll) { loop in
      let path = "/tmp/userproto-raw-ipc-\(getpid())-cut.sock"
      unlink(path)
      let server = try EchoServer(on: try SPAddress.parse("ipc://" + path), loop: loop)
      defer { server.close() }
      let raw = try RawClient(connectingTo: try SocketAddress(unixPath: path))
      try raw.send(Self.reqHeader + [0x01] + spLength(100) + [1, 2, 3])
      raw.shutdownWrite()
      #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
      #expect(await waitUntil(.seconds(5)) { server.failures.count == 1 })
      #expect(
        server.failures.recent.map(\.description) == [
          "protocol violation: the peer closed mid-frame after 12 of 109 bytes"
        ])
    }
  }
}
