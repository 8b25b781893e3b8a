import Glibc
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

/// Lines as ``LineHandler`` frames them, and the error each pipe went with.
final class FaultRecordingHandler: SocketHandler {
  var removals: [SocketError?] = []

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end) ?? []
      input.moveReaderIndex(forwardBy: 1)
      try context.deliver(line)
    }
  }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    guard let pipe = context.pipes.first(where: { $0.isWritable }) else { return .wait }
    try pipe.write(message + [0x0a])
    return .taken
  }

  func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) { removals.append(error) }
}

/// The errors the pipes of `socket` went with, so far.
private func removals(_ socket: Socket<FaultRecordingHandler>) -> [SocketError?] {
  (try? socket.withHandlerAndWait { handler, _ in handler.removals }) ?? []
}

/// Sends `line` and expects its echo within 10 s.
private func expectEcho(_ socket: Socket<FaultRecordingHandler>, _ line: String) throws {
  #expect(try socket.trySend(Array(line.utf8)))
  #expect(text(receiveSoon(socket)) == "echo \(line)")
}

/// Faults injected into single system calls (``LoopFaults``, folded into
/// ``Sys``): each reaches the socket API as that call's error, the socket
/// recovers, and nothing is left behind; an injected EINTR is retried.
@Suite("System call faults reach the socket API", .timeLimit(.minutes(2)), .testThreads)
struct SyscallFaultTests {
  @Test(
    "a listen whose socket(2), setsockopt(2), bind(2) or listen(2) fails throws that call's error",
    arguments: loopBackends)
  func listenFaults(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let cases: [(call: LoopFaults.Call, code: Int32, operation: String)] = [
      (.socket, EMFILE, "socket"), (.setsockopt, ENOMEM, "setsockopt(SO_REUSEADDR)"),
      (.bind, EADDRINUSE, "bind(127.0.0.1:0)"), (.listen, ENOBUFS, "listen"),
    ]
    for (call, code, operation) in cases {
      faults.inject(call, code)
      #expect(throws: SocketError.transport(IOError(operation, code)), "\(call)") {
        try server.listen("tcp://127.0.0.1:0")
      }
      #expect(!faults.isArmed(call), "the \(call) fault was consumed")
    }
    // The socket is unharmed: the next listen serves.
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(FaultRecordingHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound)
    try expectEcho(client, "after")
    #expect(server.statistics.pipes == 1)
  }

  @Test("a failed accept is counted; the listener accepts the connection after its retry", arguments: loopBackends)
  func acceptFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    faults.inject(.accept, EMFILE)
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(FaultRecordingHandler(), loop: clean)
    defer { client.abort() }
    try client.dial(bound)
    #expect(eventually { server.statistics.acceptErrors == 1 }, "\(server.statistics)")
    #expect(!faults.isArmed(.accept))
    #expect(eventually { server.pipeCount == 1 })
    try expectEcho(client, "accepted")
    #expect(server.statistics.acceptErrors == 1)
  }

  @Test("a failed connect is the dial attempt's error, logged; the re-dial connects", arguments: loopBackends)
  func connectFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: clean)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let logs = CapturedLogs()
    let client = try Socket(FaultRecordingHandler(), loop: loop, logger: logs.logger())
    defer { client.abort() }
    faults.inject(.connect, ECONNREFUSED)
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    #expect(eventually { client.pipeCount == 1 })
    #expect(!faults.isArmed(.connect))
    let failed = logs.matching("pipe failed to connect")
    #expect(failed.count == 1, "\(logs.all.map(\.message))")
    #expect(failed.first?["error"] == "\(SocketError.transport(IOError("connect", ECONNREFUSED)))")
    #expect(client.statistics.reconnects >= 1)
    // It never was up: the handler saw no pipe go.
    #expect(removals(client).isEmpty)
    try expectEcho(client, "connected")
  }

  @Test(
    "a failed setsockopt(TCP_NODELAY) fails the dial attempt, logged; the re-dial connects", arguments: loopBackends)
  func dialOptionFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: clean)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let logs = CapturedLogs()
    let client = try Socket(FaultRecordingHandler(), loop: loop, logger: logs.logger())
    defer { client.abort() }
    faults.inject(.setsockopt, ENOMEM)
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    #expect(eventually { client.pipeCount == 1 })
    #expect(!faults.isArmed(.setsockopt))
    let failed = logs.matching("dial failed to start")
    #expect(failed.count == 1, "\(logs.all.map(\.message))")
    #expect(failed.first?["error"] == "\(SocketError.transport(IOError("setsockopt(TCP_NODELAY)", ENOMEM)))")
    try expectEcho(client, "dialed")
  }

  @Test(
    "a failed send fails its pipe with that error; the re-dialed pipe carries the next message", arguments: loopBackends
  )
  func sendFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: clean)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(FaultRecordingHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    try expectEcho(client, "first")
    faults.inject(.send, ENOBUFS)
    #expect(try client.trySend(Array("lost".utf8)))
    #expect(eventually { removals(client).count == 1 })
    #expect(removals(client) == [.transport(IOError("send", ENOBUFS))])
    #expect(!faults.isArmed(.send))
    #expect(eventually { client.pipeCount == 1 })
    try expectEcho(client, "second")
    #expect(client.statistics.pipeFailures == 1)
  }

  @Test("a failed receive fails its pipe with that error; the re-dialed pipe works", arguments: loopBackends)
  func receiveFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: clean)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(FaultRecordingHandler(), loop: loop)
    defer { client.abort() }
    // The first receive of the first pipe fails: recv(2) on epoll, the
    // RECV submission on io_uring.
    faults.inject(.receive, ENOMEM)
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    #expect(eventually { removals(client).count == 1 })
    #expect(removals(client) == [.transport(IOError("recv", ENOMEM))])
    #expect(!faults.isArmed(.receive))
    #expect(eventually { client.pipeCount == 1 })
    try expectEcho(client, "received")
  }

  @Test(
    "the engine's own call failing (epoll_ctl, io_uring_enter) fails the pipe with it; the re-dial recovers",
    arguments: loopBackends)
  func engineFault(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    let clean = try makeTestLoop(backend)
    defer {
      loop.shutdownAndWait()
      clean.shutdownAndWait()
    }
    let server = try Socket(LineEchoHandler(), loop: clean)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(FaultRecordingHandler(), loop: loop)
    defer { client.abort() }
    let expected: SocketError
    if backend == .epoll {
      // The connect's ADD goes through; the receive's (the same fd, so
      // EEXIST when healthy) fails once the pipe is up.
      faults.inject(.epollCtl, ENOMEM, after: 1)
      expected = .transport(IOError("epoll_ctl(ADD)", ENOMEM))
      try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    } else {
      try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
      try expectEcho(client, "before")
      // The next io_uring_enter fails: everything in flight fails with it.
      faults.inject(.uringEnter, EIO)
      try loop.execute {}  // wakes the loop into its next wait
      expected = .transport(IOError("io_uring_enter", EIO))
    }
    #expect(eventually { removals(client).count == 1 })
    #expect(removals(client) == [expected])
    #expect(!faults.isArmed(backend == .epoll ? .epollCtl : .uringEnter))
    #expect(eventually { client.pipeCount == 1 })
    try expectEcho(client, "after")
  }

  @Test("EINTR injected once into socket(2), accept, send and recv is retried: nothing fails", arguments: loopBackends)
  func interruptedCallsAreRetried(backend: EventLoop.BackendChoice) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(backend, faults: faults)
    defer { loop.shutdownAndWait() }
    let calls: [LoopFaults.Call] = [.socket, .accept, .receive, .send]
    for call in calls { faults.inject(call, EINTR) }
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")  // socket(2): EINTR, then the call
    #expect(!faults.isArmed(.socket))
    let client = try Socket(FaultRecordingHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(bound, reconnect: ReconnectPolicy(minimum: .milliseconds(20)))
    try expectEcho(client, "hello")
    for call in calls { #expect(!faults.isArmed(call), "the EINTR for \(call) was consumed") }
    #expect(server.statistics.acceptErrors == 0)
    #expect(server.statistics.pipeFailures == 0 && client.statistics.pipeFailures == 0)
    #expect(client.statistics.reconnects == 0)
    #expect(removals(client).isEmpty)
  }

  @Test("Sys retries EINTR until the call is made; other errnos are thrown as the call's IOError")
  func wrapperRetriesEINTR() throws {
    let faults = LoopFaults()
    faults.inject(.socket, EINTR, times: 3)
    let fd = try faults.whileCurrent { () throws(IOError) -> Int32 in try Sockets.stream(family: AF_INET) }
    #expect(fd >= 0)
    Sys.close(fd)
    #expect(!faults.isArmed(.socket))
    faults.inject(.socket, EMFILE)
    #expect(throws: IOError("socket", EMFILE)) {
      _ = try faults.whileCurrent { () throws(IOError) -> Int32 in try Sockets.stream(family: AF_INET) }
    }
    // Unbound, the table reaches nothing: the call is made.
    faults.inject(.socket, EMFILE)
    let unbound = try Sockets.stream(family: AF_INET)
    Sys.close(unbound)
    #expect(faults.isArmed(.socket))
    faults.clear(.socket)
  }

  @Test("errno is typed with swift-system's names and printed with MaskCore's table")
  func typedErrno() {
    #expect(IOError("send", EPIPE).errno == .brokenPipe)
    #expect(IOError("recv", .connectionReset).code == ECONNRESET)
    #expect("\(IOError("recv", ECONNRESET))".hasPrefix("recv failed: ECONNRESET ("))
    #expect("\(IOError("accept", EMFILE))".hasPrefix("accept failed: EMFILE ("))
  }

  @Test("injected faults leak no fd and close nothing twice", arguments: loopBackends)
  func faultsLeakNothing(backend: EventLoop.BackendChoice) throws {
    if backend == .ioUring { try requireIoUring() }
    let (status, values) = try runCheck(["syscall-fault-leak", backend == .ioUring ? "io_uring" : "epoll", "20"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
    #expect(values["badCloses"] == "0", "\(values)")
  }
}
