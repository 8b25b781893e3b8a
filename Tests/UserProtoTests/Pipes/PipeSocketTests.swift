import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

/// Receives a message within 10 s (nil if none came).
func receiveSoon<H>(_ socket: Socket<H>, seconds: Double = 10) -> [UInt8]? {
  var message: [UInt8]?
  _ = eventually(seconds) {
    if case .message(let m)? = try? socket.tryReceive() { message = m }
    return message != nil
  }
  return message
}

func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

func uniqueName(_ tag: String) -> String { "\(tag)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))" }

@Suite("Socket with pipes", .timeLimit(.minutes(2)), .testThreads)
struct PipeSocketTests {
  @Test("one socket dials two addresses, listens on a third, and serves all three", arguments: loopBackends)
  func dialsTwoListensOnOne(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let ipcPath = "/tmp/\(uniqueName("userproto-pipes")).sock"
    // Two peers listen (the server dials them), a third dials the server.
    let p1 = try Socket(LineHandler(), loop: loop)
    let p2 = try Socket(LineHandler(), loop: loop)
    let p3 = try Socket(LineHandler(), loop: loop)
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { for s in [p1, p2, p3] { s.abort() }; server.abort() }
    let u1 = try p1.listen("tcp://127.0.0.1:0")
    let u2 = try p2.listen("ipc://\(ipcPath)")
    let u3 = try server.listen("tcp://:0")
    guard case .tcp(let bound) = u3, let port = bound.port else {
      Issue.record("listen returned \(u3)")
      return
    }
    try server.dial(u1)
    try server.dial(u2)
    try p3.dial("tcp://127.0.0.1:\(port)")
    #expect(eventually { server.pipeCount == 3 })
    for (i, peer) in [p1, p2, p3].enumerated() {
      #expect(try peer.trySend(Array("hello \(i)".utf8)))
    }
    for (i, peer) in [p1, p2, p3].enumerated() {
      #expect(text(receiveSoon(peer)) == "echo hello \(i)")
    }
    let served = try await onLoopHandler(server) { h, _ in h.served.values.sorted() }
    #expect(served == [1, 1, 1])
    #expect(server.statistics.pipesAdded == 3)
    // The ipc listener's socket file goes with its socket.
    p2.abort()
    #expect(eventually { access(ipcPath, F_OK) != 0 })
  }

  @Test("a dialed pipe whose peer restarts comes back within the reconnect maximum", arguments: loopBackends)
  func reconnectsAfterPeerRestart(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let policy = ReconnectPolicy(minimum: .milliseconds(20), maximum: .milliseconds(200))
    var server = try Socket(LineEchoHandler(), loop: loop)
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound, reconnect: policy)
    #expect(eventually { client.pipeCount == 1 })
    #expect(try client.trySend(Array("one".utf8)))
    #expect(text(receiveSoon(client)) == "echo one")

    // The peer goes away: the pipe goes, the dialer keeps re-dialing (and
    // fails: nobody listens) with its back-off.
    server.abort()
    #expect(eventually { client.pipeCount == 0 })
    #expect(eventually { client.statistics.reconnects >= 2 })

    // The peer restarts on the same port: the pipe comes back. Waits are
    // at most 200 ms, so within 200 ms plus a connect; 5 s bounds a loaded
    // machine.
    server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    try server.listen(bound)
    let restarted = EventLoop.now()
    #expect(eventually(5) { client.pipeCount == 1 })
    let waited = Double(EventLoop.now() - restarted) / 1e9
    #expect(waited < 5, "re-dialed after \(waited) s")
    #expect(try client.trySend(Array("two".utf8)))
    #expect(text(receiveSoon(client)) == "echo two")
    // One pipe is up now, and at least the first went. Twice in full
    // parallel runs (2026-12-04, both loops) one more pipe came and went in
    // between (added 3, removed 2); a reading of the dialer, listener and
    // transport code found no path for it in the library, and it did not
    // recur in 27 runs of this test alone, with or without load. What must
    // hold is that no pipe is counted twice or left behind.
    let stats = client.statistics
    #expect(stats.pipes == 1)
    #expect(stats.pipesRemoved >= 1)
    #expect(stats.pipesAdded == stats.pipesRemoved + 1, "\(stats)")
  }

  @Test("a handler may close its pipe from inside received, with input still buffered", arguments: loopBackends)
  func closeInsideReceived(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(CloseOnCommandHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    #expect(try client.trySend(Array("one".utf8)))
    #expect(text(receiveSoon(client)) == "echo one")
    // The close comes with more input behind it, in one write (so in one
    // buffer on loopback): "CLOSE\nafter\n".
    #expect(try client.trySend(Array("CLOSE\nafter".utf8)))
    #expect(eventually { server.statistics.pipesRemoved == 1 })
    let closed = try await onLoopHandler(server) { h, _ in h.closedFromReceive }
    #expect(closed == 1)
    // The dialer comes back and is served.
    #expect(eventually { server.pipeCount == 1 && client.pipeCount == 1 })
    #expect(try client.trySend(Array("two".utf8)))
    #expect(text(receiveSoon(client)) == "echo two")
  }

  @Test("a socket closed while its dial is still connecting leaves no operation behind", arguments: loopBackends)
  func abortWhileConnecting(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // A listener that never accepts, with its queue full: the kernel drops
    // further SYNs, so a connect to it stays in progress (SYN retransmits)
    // for as long as the test lasts.
    let listener = tcpSocket()
    defer { close(listener) }
    let address = try SocketAddress(ipv4: "127.0.0.1", port: 0)
    try #require(address.withSockaddr { bind(listener, $0, $1) } == 0)
    try #require(listen(listener, 0) == 0)
    let bound = try Sockets.localAddress(listener)
    var fillers: [Int32] = []
    defer { for fd in fillers { close(fd) } }
    for _ in 0..<2 {
      let fd = tcpSocket()
      fillers.append(fd)
      _ = bound.withSockaddr { connect(fd, $0, $1) }
    }
    let before = try onLoop(loop) { loop.operations.count }
    let client = try Socket(LineHandler(), loop: loop)
    try client.dial(.tcp(bound))
    // The dial's connect is in flight and stays so.
    #expect(eventually { (try? onLoop(loop) { loop.operations.count }) ?? 0 > before })
    usleep(200_000)
    #expect(client.pipeCount == 0, "the connect must not have completed")
    client.abort()
    // Without the cancel, the connect would stay live until TCP gave up
    // (minutes later).
    #expect(eventually(5) { (try? onLoop(loop) { loop.operations.count }) == before })
  }

  @Test("sends wait in the send queue until a pipe comes; the fd is not writable while it is full")
  func sendQueueHoldsUntilAPipeComes() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(sendHighWatermark: 4 * (9 + SocketOptions.perMessageCost), sendLowWatermark: 0)
    let name = uniqueName("queue")
    let client = try Socket(LineHandler(), loop: loop, options: options)
    defer { client.abort() }
    let fd = client.fileDescriptor
    try client.dial("inproc://\(name)", reconnect: ReconnectPolicy(minimum: .milliseconds(10)))
    var accepted = 0
    while try client.trySend(Array("message \(accepted)".utf8)) { accepted += 1 }  // 9 bytes each
    #expect(accepted == 4)
    #expect(eventually { !pollEvents(fd).contains(.writable) })
    #expect(client.readiness == [])

    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    try server.listen("inproc://\(name)")
    for i in 0..<4 { #expect(text(receiveSoon(server)) == "message \(i)") }
    #expect(eventually { pollEvents(fd).contains(.writable) })
    #expect(client.statistics.messagesSent == 4)
  }

  @Test("a handler's context and pipes refuse use off the loop")
  func contextOffLoop() async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let name = uniqueName("offloop")
    let a = try Socket(LineHandler(), loop: loop)
    let b = try Socket(LineHandler(), loop: loop)
    defer { a.abort(); b.abort() }
    try a.listen("inproc://\(name)")
    try b.dial("inproc://\(name)")
    #expect(eventually { a.pipeCount == 1 && b.pipeCount == 1 })
    // Smuggle the loop-confined objects out (what the compiler refuses
    // without an unchecked box), then use them from this thread.
    let leaked = try await onLoopHandler(a) { _, context in Smuggled((context, context.pipes[0])) }
    let (context, pipe) = leaked.value
    #expect(throws: SocketError.notOnLoop("SocketContext.deliver")) { try context.deliver([1]) }
    #expect(throws: SocketError.notOnLoop("SocketPipe.write")) { try pipe.write([1]) }
    #expect(throws: SocketError.notOnLoop("SocketContext.startTimer")) { try context.startTimer(after: .seconds(1)) }
    #expect(context.pipes.isEmpty)
    #expect(try a.tryReceive() == .wouldBlock)
  }

  @Test("the fd shows the socket's readiness once handed out, aggregated over pipes")
  func readinessAggregates() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let name = uniqueName("ready")
    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    try server.listen("inproc://\(name)")
    let clients = try (0..<3).map { _ in try Socket(FanOutHandler(), loop: loop) }
    defer { for c in clients { c.abort() } }
    for c in clients { try c.dial("inproc://\(name)") }
    #expect(eventually { server.pipeCount == 3 })
    let fd = server.fileDescriptor
    #expect(pollEvents(fd) == [.writable])
    #expect(try clients[1].trySend(Array("x\n".utf8)))
    #expect(eventually { pollEvents(fd) == [.readable, .writable] })
    #expect(try server.tryReceive() == .message(Array("x".utf8)))
    #expect(pollEvents(fd) == [.writable])
    #expect(try server.tryReceive() == .wouldBlock)
  }

  @Test("closing the socket closes its pipes; the peers see them go; calls then throw closed")
  func closeEndsPipes() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineEchoHandler(), loop: loop)
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .seconds(30)))
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    try server.close()
    #expect(eventually { client.pipeCount == 0 })
    #expect(throws: SocketError.closed) { try server.trySend([1]) }
    #expect(throws: SocketError.closed) { try server.tryReceive() }
    #expect(throws: SocketError.closed) { try server.listen("tcp://127.0.0.1:0") }
    #expect(throws: SocketError.closed) { try server.close() }
  }

  @Test("inproc across loops is refused with a clear error")
  func inprocAcrossLoops() throws {
    let l1 = try makeLoop(.epoll)
    let l2 = try makeLoop(.epoll)
    defer {
      l1.shutdownAndWait()
      l2.shutdownAndWait()
    }
    let name = uniqueName("xloop")
    let a = try Socket(LineHandler(), loop: l1)
    let b = try Socket(LineHandler(), loop: l2)
    defer { a.abort(); b.abort() }
    try a.listen("inproc://\(name)")
    #expect(throws: SocketError.self) { try b.dial("inproc://\(name)") }
    // The name is taken while a listens.
    let c = try Socket(LineHandler(), loop: l1)
    defer { c.abort() }
    #expect(throws: SocketError.self) { try c.listen("inproc://\(name)") }
  }

  @Test("a send-cancels-receive handler never hands the application an answer to an abandoned send")
  func sendCancelsReceive() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let name = uniqueName("cancel")
    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    try server.listen("inproc://\(name)")
    let requester = try Socket(RequesterHandler(), loop: loop)
    defer { requester.abort() }
    try requester.dial("inproc://\(name)")
    #expect(eventually { server.pipeCount == 1 })
    #expect(try requester.trySend(Array("first".utf8)))
    #expect(text(receiveSoon(server)) == "first")
    // A second request abandons the first; the answer to the first then
    // arrives, and is never received.
    #expect(try requester.trySend(Array("second".utf8)))
    #expect(text(receiveSoon(server)) == "second")
    try serverAnswer(server, "answer to first")
    try serverAnswer(server, "answer to second")
    #expect(text(receiveSoon(requester)) == "answer to second")
    #expect(try requester.tryReceive() == .wouldBlock)
  }

  private func serverAnswer(_ server: Socket<LineHandler>, _ answer: String) throws {
    #expect(try server.trySend(Array(answer.utf8)))
  }
}

/// Sends each request as a line and accepts only lines answering the
/// latest: "answer to REQUEST".
final class RequesterHandler: SocketHandler {
  static var sendCancelsReceive: Bool { true }
  var current: [UInt8] = []
  let inner = LineHandler()

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end) ?? []
      input.moveReaderIndex(forwardBy: 1)
      if line == Array("answer to ".utf8) + current { try context.deliver(line) }
    }
  }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    let disposition = try inner.send(message, context: context)
    if disposition == .taken { current = message }
    return disposition
  }
}

/// Carries loop-confined objects out of the loop, for tests that check
/// they refuse use there.
struct Smuggled<T>: @unchecked Sendable {
  let value: T
  init(_ value: T) { self.value = value }
}

/// Runs `body` with the handler on the loop.
func onLoopHandler<H: SocketHandler, T: Sendable>(
  _ socket: Socket<H>, _ body: @escaping @Sendable (H, SocketContext) throws -> T
) async throws -> T {
  try await socket.withHandler(body)
}

@Suite("Socket with pipes: fds", .timeLimit(.minutes(3)), .testThreads)
struct PipeSocketLeakTests {
  @Test("200 rounds of sockets with tcp, ipc, udp and inproc pipes leak no fd", arguments: loopBackends)
  func noLeaks(backend: EventLoop.BackendChoice) throws {
    if backend == .ioUring { try requireIoUring() }
    let (status, values) = try runCheck(["pipes-leak", backend == .ioUring ? "io_uring" : "epoll", "200"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
  }
}

@Suite("Socket with pipes: async, close, UDP", .timeLimit(.minutes(2)), .testThreads)
struct PipeSocketAsyncTests {
  @Test("async send and for-await receive: 2,000 messages in order through a small queue", arguments: loopBackends)
  func asyncInOrder(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let small = SocketOptions(
      receiveHighWatermark: 1024, receiveLowWatermark: 256, sendHighWatermark: 1024, sendLowWatermark: 256)
    let server = try Socket(LineHandler(), loop: loop, options: small)
    let client = try Socket(LineHandler(), loop: loop, options: small)
    defer {
      client.abort()
      server.abort()
    }
    let url = try server.listen("tcp://127.0.0.1:0")
    try client.dial(url)
    let count = 2000
    let sender = Task {
      for i in 0..<count { try await client.send(Array("m\(i)".utf8)) }
    }
    var received = 0
    for try await message in server.messages {
      #expect(text(message) == "m\(received)")
      received += 1
      if received == count { break }
    }
    try await sender.value
    #expect(received == count)
    #expect(server.statistics.messagesReceived == count)
  }

  @Test("close hands every accepted send to the handler and flushes it before the pipes close")
  func gracefulCloseFlushes() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop)
    try client.dial(url)
    #expect(eventually { client.pipeCount == 1 })
    var sent = 0
    while sent < 500, try client.trySend([UInt8](repeating: 0x61, count: 100)) { sent += 1 }
    try client.close()
    var got = 0
    _ = eventually {
      while case .message? = try? server.tryReceive() { got += 1 }
      return got == sent
    }
    #expect(got == sent)
    #expect(eventually { server.pipeCount == 0 })
  }

  @Test("UDP: a dialed pipe and a listener's pipe per peer address", arguments: loopBackends)
  func udpPipes(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("udp://127.0.0.1:0")
    let clients = try (0..<3).map { _ in try Socket(DatagramClient(), loop: loop) }
    defer { for c in clients { c.abort() } }
    for c in clients { try c.dial(url) }
    #expect(eventually { clients.allSatisfy { $0.pipeCount == 1 } })
    for (i, c) in clients.enumerated() { #expect(try c.trySend([UInt8(i), 1, 2])) }
    for (i, c) in clients.enumerated() { #expect(receiveSoon(c) == [UInt8(i), 1, 2]) }
    #expect(server.pipeCount == 3)
  }

  @Test("a handler's finishReceiving ends the stream for the application: POLLIN, then end-of-stream")
  func finishReceiving() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let name = uniqueName("finish")
    let server = try Socket(OnePeerHandler(), loop: loop)
    defer { server.abort() }
    try server.listen("inproc://\(name)")
    let client = try Socket(LineHandler(), loop: loop)
    try client.dial("inproc://\(name)", reconnect: ReconnectPolicy(minimum: .seconds(30)))
    let fd = server.fileDescriptor
    #expect(eventually { server.pipeCount == 1 })
    #expect(try client.trySend(Array("last".utf8)))
    #expect(text(receiveSoon(server)) == "last\n")
    try client.close()
    #expect(eventually { pollEvents(fd).contains(.readable) })
    #expect(try server.tryReceive() == .endOfStream)
  }
}

/// Answers each datagram to its sender.
final class DatagramEcho: SocketHandler {
  static var sendsMessages: Bool { false }
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    try pipe.write(input.readAll())
  }
}

/// Sends each message as one datagram; delivers each datagram.
final class DatagramClient: SocketHandler {}

/// Delivers what its one peer sends; when that peer finishes, so does the
/// application's stream.
final class OnePeerHandler: SocketHandler {
  func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    pipe.close()
    try context.finishReceiving()
  }
}
