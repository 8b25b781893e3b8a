import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Scoped socket lifetimes: withSocket, closeAndWait", .timeLimit(.minutes(2)), .testThreads)
struct SocketScopeTests {
  @Test("withSocket closes gracefully when the body returns: every send arrives, nothing of the socket is left")
  func returnsThenCloses() async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let before = try onLoop(loop) { loop.operations.count }
    let (socket, sent) = try await Socket.withSocket(LineHandler(), loop: loop) { client in
      try client.dial(bound)
      // Closing stops the dialers: sends still waiting for a first pipe
      // would be dropped, so the pipe comes first.
      #expect(eventually { client.pipeCount == 1 })
      var sent = 0
      for i in 0..<200 {
        try await client.send(Array("line \(i)".utf8))
        sent += 1
      }
      return (client, sent)
    }
    // Returned only once the socket had finished.
    #expect(socket.isClosed)
    #expect(try onLoop(loop) { socket.core.isFinished })
    #expect(try onLoop(loop) { loop.operations.count } == before)
    var received: [String] = []
    #expect(
      eventually {
        while case .message(let m)? = try? server.tryReceive() { received.append(String(decoding: m, as: UTF8.self)) }
        return received.count == sent
      })
    #expect(received == (0..<200).map { "line \($0)" }, "graceful close: every accepted send arrives, in order")
    #expect(eventually { server.pipeCount == 0 }, "the server saw the pipe end")
  }

  struct Failure: Error, Equatable {}

  @Test("withSocket aborts when the body throws, and rethrows its error")
  func throwsThenAborts() async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let escaped = Mutex<Socket<LineHandler>?>(nil)
    do {
      try await Socket.withSocket(LineHandler(), loop: loop) { client in
        escaped.withLock { $0 = client }
        try client.dial(bound)
        #expect(eventually { client.pipeCount == 1 })
        throw Failure()
      }
      Issue.record("withSocket returned although its body threw")
    } catch let error as Failure {
      #expect(error == Failure())
    }
    let socket = try #require(escaped.withLock { $0 })
    #expect(socket.isClosed)
    #expect(try onLoop(loop) { socket.core.isFinished })
    #expect(eventually { server.pipeCount == 0 }, "the server saw the pipe end")
  }

  @Test("closeAndWait returns after close, after abort, twice, and when the loop has stopped")
  func closeAndWaitAlwaysReturns() async throws {
    let loop = try makeLoop(.epoll)
    let a = try Socket(LineHandler(), loop: loop)
    await a.closeAndWait()
    await a.closeAndWait()
    #expect(a.isClosed)
    let b = try Socket(LineHandler(), loop: loop)
    b.abort()
    await b.abortAndWait()
    // A socket still open when its loop stops: the wait ends with the loop.
    let c = try Socket(LineHandler(), loop: loop)
    try c.dial("tcp://127.0.0.1:1")  // refused, re-dialed: the socket stays busy
    let waiter = Task { await c.closeAndWait() }
    loop.shutdownAndWait()
    await waiter.value
    let d = try? Socket(LineHandler(), loop: loop)
    if let d { await d.closeAndWait() }  // a loop already stopped: returns at once
  }
}
