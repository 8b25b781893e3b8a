import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// REP v0 and PUB v0 checked byte for byte against peers written by hand
/// over raw TCP and Unix sockets: header parsing, replies that cannot go,
/// refused peers let go, SP/IPC framing, subscribers counted only after
/// their header. Both loop engines.
@Suite("SP REP and PUB handlers against raw peers", .timeLimit(.minutes(1)), .testThreads)
struct SPRepPubRawPeerTests {
  static let reqHeader = spHeader(0x30)
  static let repHeader = spHeader(0x31)
  static let subHeader = spHeader(0x21)

  // MARK: REP

  @Test("the SP header and a request may arrive one byte at a time", arguments: interopBackends)
  func headerByteByByte(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      // A generous header timeout: on a loaded machine the sleeps between
      // bytes can add up to seconds.
      let rep = try Socket(Rep0Handler(headerTimeout: .seconds(120)), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(rep.listen("tcp://127.0.0.1:0")))
      serve(rep, ServerControl("rep"))
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      for byte in Self.reqHeader {
        try raw.send([byte])
        try await Task.sleep(for: .milliseconds(5))
      }
      let request = spRequest(id: 0x8000_0042, utf8("slow"))
      for byte in request {
        try raw.send([byte])
        try await Task.sleep(for: .milliseconds(1))
      }
      #expect(await raw.readFrame(within: .seconds(5)) == spWord(0x8000_0042) + utf8("rep: slow"))
      #expect(rep.statistics.pipeFailures == 0)
    }
  }

  @Test("a well-formed raw client is served, up to a frame of exactly 1 MiB", arguments: interopBackends)
  func wellFormedClient(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(rep.listen("tcp://127.0.0.1:0")))
      echo(rep)
      // Header and first request in one write, before reading the server's.
      let small = spRequest(id: 0x8000_0001, utf8("small"))
      try raw.send(Self.reqHeader + small)
      #expect(await raw.read(8 + small.count, within: .seconds(5)).bytes == Self.repHeader + small)
      // A frame of 4 + (1 MiB - 4) bytes: exactly the limit.
      let big = spRequest(id: 0x8000_0002, [UInt8](repeating: 0x5a, count: (1 << 20) - 4))
      try raw.send(big)
      let reply = await raw.read(big.count, within: .seconds(10))
      #expect(reply.bytes.count == big.count && reply.bytes == big)
      let stats = try await rep.withHandler { h, _ in h.statistics }
      #expect(stats.repliesSent == 2, "\(stats)")
      #expect(rep.pipeCount == 1 && rep.statistics.pipeFailures == 0)
    }
  }

  @Test("REP lets go of a pipe whose peer closed cleanly, without counting a failure", arguments: interopBackends)
  func cleanCloseReleasesPipe(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let target = try tcpTarget(rep.listen("tcp://127.0.0.1:0"))
      echo(rep)
      do {
        let raw = try RawClient(connectingTo: target)
        let request = spRequest(id: 0x8000_0001, utf8("bye"))
        try raw.send(Self.reqHeader + request)
        #expect(await raw.read(8 + request.count, within: .seconds(5)).bytes == Self.repHeader + request)
        #expect(rep.pipeCount == 1)
      }  // closed here (FIN): a REQ peer that got its reply and exited
      #expect(await waitUntil(.seconds(5)) { rep.pipeCount == 0 }, "pipes: \(rep.pipeCount)")
      #expect(rep.statistics.pipeFailures == 0 && rep.statistics.pipesRemoved == 1)
    }
  }

  /// The app answers in order; a reply whose pipe cannot take it (the
  /// requester stopped reading) is dropped. The replies after it must
  /// still pair with their own requests.
  @Test("a reply its pipe cannot take is dropped and counted; later replies keep their own ids")
  func droppedRepliesDoNotShiftLaterOnes() async throws {
    try await withLoop(.epoll) { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      let target = try tcpTarget(rep.listen("tcp://127.0.0.1:0"))
      echo(rep)
      // Never reads until told to, with a small kernel receive buffer.
      let raw = try RawClient(connectingTo: target, receiveBuffer: 4096)
      try raw.send(Self.reqHeader)
      func statistics() async throws -> Rep0Handler.Statistics { try await rep.withHandler { h, _ in h.statistics } }
      let body = [UInt8](repeating: 0x61, count: 64 * 1024)
      var requests: [[UInt8]] = []
      var stats = try await statistics()
      while stats.repliesToStalledPeers == 0 && requests.count < 2000 {
        let request = spRequest(id: 0x8000_0000 | UInt32(requests.count + 1), spWord(UInt32(requests.count)) + body)
        requests.append(request)
        try raw.send(request)
        let handled = requests.count
        let answered = try await waitUntilAsync(.seconds(10)) {
          stats = try await statistics()
          return stats.repliesSent + stats.repliesToStalledPeers == handled
        }
        #expect(answered, "request \(handled) was not answered: \(stats)")
        if !answered { break }
      }
      #expect(stats.repliesToStalledPeers >= 1, "no reply dropped after \(requests.count) requests of 64 KiB: \(stats)")
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      // What was answered arrives in order, each with its own request's id
      // and body (requests are echoed, so a reply is its request's payload).
      for request in requests.prefix(stats.repliesSent) {
        #expect(await raw.readFrame(within: .seconds(10)) == Array(request.dropFirst(8)))
      }
      // A new request gets its own reply, not a dropped one's.
      let next = spRequest(id: 0x8000_7777, utf8("next"))
      try raw.send(next)
      #expect(await raw.readFrame(within: .seconds(10)) == Array(next.dropFirst(8)))
      #expect(rep.statistics.pipeFailures == 0)
    }
  }

  @Test("a failure before the header stays the pipe's one reason after the header timeout")
  func headerTimerStopsOnFailure() async throws {
    try await withLoop(.epoll) { loop in
      let rep = try Socket(Rep0Handler(headerTimeout: .milliseconds(500)), loop: loop)
      defer { rep.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(rep.listen("tcp://127.0.0.1:0")))
      // The partial header and the end of stream go out at once, so the
      // pipe fails long before its header timer would fire.
      try raw.send([0x00, 0x53, 0x50])
      raw.shutdownWrite()
      func failures() async -> [String] { (try? await rep.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      let failed = await waitUntilAsync(.seconds(5)) { await failures().count == 1 }
      let first = await failures()
      #expect(failed, "\(first)")
      #expect(first.first?.contains("the peer closed after 3 of the 8 SP header bytes") == true, "\(first)")
      // Past the header timeout: a timer left running would fail the pipe
      // again and record a second reason.
      try await Task.sleep(for: .milliseconds(800))
      let later = await failures()
      #expect(later.count == 1, "\(later)")
      #expect(rep.statistics.pipeFailures == 1)
    }
  }

  // MARK: Refused peers are let go

  @Test("pipes of refused peers are closed and released (REP and PUB)", arguments: ["rep", "pub"])
  func refusedPeersAreReleased(server kind: String) async throws {
    try await withLoop(.epoll) { loop in
      if kind == "rep" {
        try await Self.refusedPeers(try Socket(PipeTracking(Rep0Handler()), loop: loop), header: Self.repHeader)
      } else {
        try await Self.refusedPeers(try Socket(PipeTracking(Pub0Handler()), loop: loop), header: spHeader(0x20))
      }
    }
  }

  /// Twenty raw peers that send a PAIR header, one after the other: each
  /// pipe fails, its connection closes, and no pipe object outlives it.
  static func refusedPeers<H: SocketHandler>(_ server: Socket<PipeTracking<H>>, header: [UInt8]) async throws {
    defer { server.abort() }
    let target = try tcpTarget(server.listen("tcp://127.0.0.1:0"))
    for n in 1...20 {
      let raw = try RawClient(connectingTo: target)
      #expect(await raw.read(8, within: .seconds(5)).bytes == header)
      #expect(await waitUntil(.seconds(5)) { server.pipeCount == 1 && server.statistics.pipesAdded == n })
      try raw.send(spHeader(0x10))  // PAIR: refused by both
      #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
    }
    #expect(await waitUntil(.seconds(5)) { server.pipeCount == 0 })
    #expect(server.statistics.pipeFailures == 20)
    let seen = try await server.withHandler { h, _ in h.pipesSeen }
    #expect(seen == 20)
    let released = await waitUntilAsync(.seconds(5)) {
      (try? await server.withHandler { h, _ in h.livePipes }) == 0
    }
    let alive = (try? await server.withHandler { h, _ in h.livePipes }) ?? -1
    #expect(released, "\(alive) of 20 pipes still alive")
  }

  // MARK: PUB

  @Test("a peer is a subscriber only once its SUB header is accepted", arguments: interopBackends)
  func subscriberCountedAfterHeader(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let pub = try Socket(Pub0Handler(), loop: loop)
      defer { pub.abort() }
      let raw = try RawClient(connectingTo: try tcpTarget(pub.listen("tcp://127.0.0.1:0")))
      func statistics() async throws -> (ready: Int, stats: Pub0Handler.Statistics) {
        try await pub.withHandler { h, _ in (ready: h.pipes.ready.count, stats: h.statistics) }
      }
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x20))
      #expect(await waitUntil(.seconds(5)) { pub.pipeCount == 1 })
      #expect(try await statistics().ready == 0)
      #expect(try pub.trySend(utf8("early")))
      #expect(await waitUntilAsync(.seconds(5)) { (try? await statistics().stats.published) == 1 })
      let early = try await statistics().stats
      #expect(early.delivered == 0 && early.drops == 0, "\(early)")
      try raw.send(Self.subHeader)
      #expect(await waitUntilAsync(.seconds(5)) { (try? await statistics().ready) == 1 })
      #expect(try pub.trySend(utf8("late")))
      #expect(await raw.readFrame(within: .seconds(5)) == utf8("late"))
      let late = try await statistics().stats
      #expect(late.published == 2 && late.delivered == 1 && late.drops == 0, "\(late)")
    }
  }

  // MARK: SP/IPC framing

  @Test("over ipc:// each message has a type byte of 1; another type fails the pipe", arguments: interopBackends)
  func ipcFraming(backend: EventLoop.BackendChoice) async throws {
    let path = freshIPCPath("raw-ipc-\(backend)")
    try await withLoop(backend) { loop in
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      try rep.listen("ipc://" + path)
      serve(rep, ServerControl("rep"))
      let raw = try RawClient(connectingTo: try SocketAddress(unixPath: path))
      let request = spRequest(id: 0x8000_0001, utf8("over ipc"))
      try raw.send(Self.reqHeader + [0x01] + request)
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      let payload = spWord(0x8000_0001) + utf8("rep: over ipc")
      let expected = [0x01] + spLength(UInt64(payload.count)) + payload
      #expect(await raw.read(expected.count, within: .seconds(5)).bytes == expected)
      try raw.send([0x02] + request)
      let end = await raw.waitForClose(within: .seconds(5))
      #expect(end.closure != nil && end.bytes.isEmpty)
      let reasons = try await rep.withHandler { h, _ in h.pipes.recentFailures }
      #expect(reasons.count == 1, "\(reasons)")
      #expect(reasons.first?.contains("SP/IPC message type 2, expected 1") == true, "\(reasons)")
      #expect(try await rep.withHandler { h, _ in h.statistics.repliesSent } == 1)
      rep.abort()
      // The listener's socket file goes with it.
      #expect(await waitUntil(.seconds(5)) { access(path, F_OK) != 0 }, "socket file left behind")
    }
  }

  @Test("over ipc:// a frame cut short counts the 9-byte prefix")
  func ipcTruncation() async throws {
    try await withLoop(.epoll) { loop in
      let path = freshIPCPath("raw-ipc-cut")
      let rep = try Socket(Rep0Handler(), loop: loop)
      defer { rep.abort() }
      try rep.listen("ipc://" + path)
      let raw = try RawClient(connectingTo: try SocketAddress(unixPath: path))
      try raw.send(Self.reqHeader + [0x01] + spLength(100) + [1, 2, 3])
      raw.shutdownWrite()
      #expect(await raw.waitForClose(within: .seconds(5)).closure != nil)
      func failures() async -> [String] { (try? await rep.withHandler { h, _ in h.pipes.recentFailures }) ?? [] }
      #expect(await waitUntilAsync(.seconds(5)) { await failures().count == 1 })
      let reasons = await failures()
      #expect(
        reasons.first?.contains("protocol violation: the peer closed mid-frame after 12 of 109 bytes") == true,
        "\(reasons)")
    }
  }

  // MARK: SUB subscriptions

  @Test(
    "unsubscribing stops matching messages while another subscription goes on; with none, nothing is delivered",
    arguments: interopBackends)
  func unsubscribe(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let pub = try Socket(Pub0Handler(), loop: loop)
      let sub = try Socket(Sub0Handler(subscriptions: [utf8("a"), utf8("b")]), loop: loop)
      defer {
        sub.abort()
        pub.abort()
      }
      try sub.dial(try dialURL(try pub.listen("tcp://127.0.0.1:0")))
      #expect(
        await waitUntilAsync(.seconds(10)) { (try? await pub.withHandler { h, _ in h.pipes.ready.count }) == 1 })
      func filtered() async throws -> Int { try await sub.withHandler { h, _ in h.statistics.filtered } }
      func publish(_ texts: String...) throws { for text in texts { #expect(try pub.trySend(utf8(text))) } }

      try publish("a1", "c1", "b1")
      #expect(string(try await nextSPMessage(sub)) == "a1")
      #expect(string(try await nextSPMessage(sub)) == "b1")
      #expect(try await filtered() == 1)

      _ = try await sub.withHandler { h, _ in h.unsubscribe("a") }
      try publish("a2", "b2")
      // One pipe keeps order: a2 arrived before b2 and was dropped.
      #expect(string(try await nextSPMessage(sub)) == "b2")
      #expect(try await filtered() == 2)

      try await sub.withHandler { h, _ in h.subscribe("a") }
      try publish("a3")
      #expect(string(try await nextSPMessage(sub)) == "a3")

      let left = try await sub.withHandler { h, _ in
        h.unsubscribe("a")
        h.unsubscribe("b")
        return h.subscriptions.count
      }
      #expect(left == 0)
      try publish("a4", "b4")
      #expect(await waitUntilAsync(.seconds(5)) { (try? await filtered()) == 4 })
      #expect(try sub.tryReceive() == .wouldBlock)
      let stats = try await pub.withHandler { h, _ in h.statistics }
      #expect(stats.published == 8 && stats.delivered == 8 && stats.drops == 0, "\(stats)")
    }
  }
}

/// The loopback address a raw client connects to for a socket listening on
/// `bound` (a tcp:// URL).
func tcpTarget(_ bound: TransportURL) throws -> SocketAddress {
  guard case .tcp(let address) = bound, let port = address.port else {
    throw InteropFailure("listen gave \(bound), not a tcp:// address with a port")
  }
  return try loopback(port)
}

/// Echoes `rep`'s requests from a task (each reply is its request's body)
/// until the socket closes.
@discardableResult
func echo(_ rep: Rep0Socket) -> Task<Void, Never> {
  Task {
    do {
      for try await request in rep.messages { try await rep.send(request) }
    } catch {}
  }
}

/// A handler that runs `Inner` and keeps a weak reference to each pipe it
/// was given, so a test can check that no pipe object outlives its removal.
final class PipeTracking<Inner: SocketHandler>: SocketHandler {
  let inner: Inner
  private struct Entry { weak var pipe: SocketPipe? }
  private var seen: [Entry] = []

  init(_ inner: Inner) { self.inner = inner }

  /// Pipes the handler was given.
  var pipesSeen: Int { seen.count }
  /// Pipes the handler was given that something still holds.
  var livePipes: Int { seen.filter { $0.pipe != nil }.count }

  static var sendsMessages: Bool { Inner.sendsMessages }
  static var sendCancelsReceive: Bool { Inner.sendCancelsReceive }
  static func validateSend(_ message: [UInt8]) throws(SocketError) { try Inner.validateSend(message) }

  func pipeAdded(_ pipe: SocketPipe, context: SocketContext) {
    seen.append(Entry(pipe: pipe))
    inner.pipeAdded(pipe, context: context)
  }

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    try inner.received(&input, from: pipe, context: context)
  }

  func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try inner.pipeReachedEnd(pipe, input: input, context: context)
  }

  func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    inner.pipeRemoved(pipe, error: error, context: context)
  }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    try inner.send(message, context: context)
  }

  func pipeWritable(_ pipe: SocketPipe, context: SocketContext) { inner.pipeWritable(pipe, context: context) }
  func timerFired(_ timer: HandlerTimer, context: SocketContext) { inner.timerFired(timer, context: context) }
  func socketClosing(context: SocketContext) { inner.socketClosing(context: context) }
}
