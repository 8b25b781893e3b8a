import Glibc
import Locking
import TestSupport
import Testing

@testable import UserProto

/// Holds a weak reference for a test.
final class WeakBox<T: AnyObject>: @unchecked Sendable {
  private let lock = Lock<Void>(())
  private weak var object: T?
  init(_ object: T) { self.object = object }
  var isGone: Bool { lock.withLock { _ in object == nil } }
}

@Suite("Protocol socket lifecycle", .testThreads)
struct SocketLifecycleTests {
  @Test("a failed mask fd write fails the socket with the reason; readiness is never silently stale")
  func maskWriteFailure() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop)
    defer {
      a.abort()
      b.abort()
    }
    try a.mask.close()  // every later write of a's readiness fails
    #expect(try b.trySend([1]))
    #expect(
      eventually {
        if case .failed = a.connectionState { return true }
        return false
      })
    guard case .failed(.transport(let error)) = a.connectionState else {
      Issue.record("a is \(a.connectionState)")
      return
    }
    #expect(error.operation.contains("mask fd update"), "\(error)")
    #expect(throws: SocketError.transport(error)) { try a.trySend([2]) }
  }

  @Test("close() and abort() after the loop has stopped release the transport", arguments: loopBackends)
  func closeAfterLoopStopped(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop)
    loop.shutdownAndWait()
    #expect(a.transport != nil && b.transport != nil)
    a.abort()
    try b.close()
    #expect(a.transport == nil, "abort() closed the transport")
    #expect(b.transport == nil, "close() closed the transport")
  }

  @Test(
    "closures that capture their socket do not keep it alive after close or abort",
    arguments: loopBackends, [false, true])
  func handlersReleased(backend: EventLoop.BackendChoice, useClose: Bool) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let weak = try { () throws -> WeakBox<FramedSocket> in
      let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop)
      try onLoop(loop) {
        a.observeStateChanges { _ in _ = a.connectionState }
        a.handleMessagesOnLoop { _, _ in _ = a.connectionState }
      }
      if useClose { try a.close() } else { a.abort() }
      b.abort()
      return WeakBox(a)
    }()
    #expect(eventually { weak.isGone }, "the socket was deallocated once the loop drained")
  }
}
