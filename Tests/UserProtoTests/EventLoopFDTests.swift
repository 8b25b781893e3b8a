import Dispatch
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Event loop and fd lifetimes", .testThreads)
struct EventLoopFDTests {
  @Test(
    "an fd closed while registered, its number reused: the new file works, the old operations end with EBADF",
    arguments: loopBackends)
  func closedWhileRegistered(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer { close(b) }
    let oldEnded = Collector<Int32>()
    let oldData = Collector<[UInt8]>()
    _ = try onLoop(loop) {
      _ = try loop.receive(socket: a) { result in
        switch result {
        case .success(let bytes): oldData.append(bytes)
        case .failure(let error): oldEnded.append(error.code)
        }
      }
      _ = try loop.watch(fd: a, events: [.readable]) { result in
        if case .failure(let error) = result { oldEnded.append(error.code) }
      }
    }
    // Close `a` without cancelling, and put another socket at its number:
    // dup2 does both atomically, so no other test can take the number.
    let (c, peer) = try streamPair()
    #expect(dup2(c, a) == a)
    close(c)
    defer {
      close(a)
      close(peer)
    }
    let newData = Collector<[UInt8]>()
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { newData.append(bytes) }
      }
    }
    #expect(write(peer, "new", 3) == 3)
    #expect(eventually { Array(newData.values.joined()) == Array("new".utf8) }, "the new file's receive works")
    #expect(eventually { oldEnded.count == 2 }, "\(oldEnded.values)")
    #expect(oldEnded.values == [EBADF, EBADF], "the old receive and watch ended with EBADF")
    #expect(oldData.count == 0)
    #expect(try onLoop(loop) { loop.operationsInFlight } == 1, "only the new receive is left")
  }

  @Test("cancel then close at once: a send queued in the same turn still reaches the peer", arguments: loopBackends)
  func cancelThenClose(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    for round in 0..<20 {
      let (a, b) = try streamPair()
      defer { close(b) }
      let sent = Collector<Result<Int, IOError>>()
      // What StreamTransport.close does: cancel the receive, close the fd,
      // in the same loop turn that queued a send.
      try onLoop(loop) {
        let receive = try loop.receive(socket: a) { _ in }
        _ = try loop.send(socket: a, Array("bye \(round)".utf8)) { sent.append($0) }
        loop.cancel(receive)
        close(a)
      }
      var entry = pollfd(fd: b, events: Int16(POLLIN), revents: 0)
      #expect(poll(&entry, 1, 10_000) == 1)
      var buffer = [UInt8](repeating: 0, count: 64)
      let n = read(b, &buffer, buffer.count)
      #expect(n > 0 && Array(buffer[0..<max(n, 0)]) == Array("bye \(round)".utf8), "the send left before the close")
      #expect(eventually { sent.count == 1 })
    }
  }

  @Test("io_uring: cancel leaves nothing in the submission queue")
  func cancelFlushesQueue() throws {
    let loop = try makeTestLoop(.ioUring)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let left = try onLoop(loop) {
      let receive = try loop.receive(socket: a) { _ in }
      _ = try loop.send(socket: a, [1, 2, 3]) { _ in }
      let before = (loop.engine as? URingEngine)?.queuedSubmissions ?? -1
      loop.cancel(receive)
      return (before, (loop.engine as? URingEngine)?.queuedSubmissions ?? -1)
    }
    #expect(left.0 > 0, "the receive and the send were queued, not yet submitted")
    #expect(left.1 == 0, "cancel submitted everything")
  }
}
