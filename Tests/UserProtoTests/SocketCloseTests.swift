import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Protocol socket close", .testThreads)
struct SocketCloseTests {
  /// The peer half-closes while this side still has a large reply queued,
  /// then this side closes: the peer's end-of-stream must not cut the reply.
  @Test(
    "graceful close after the peer's end-of-stream still delivers every queued byte",
    arguments: loopBackends, Transport.allCases)
  func closeFlushesAfterPeerEnd(backend: EventLoop.BackendChoice, transport: Transport) throws {
    try SocketCloseTests.flushesAfterPeerEnd(backend, transport, close: true)
  }

  @Test(
    "shutdownWrite after queueing a large reply, then the peer's end: every byte still arrives",
    arguments: loopBackends, Transport.allCases)
  func shutdownFlushesAfterPeerEnd(backend: EventLoop.BackendChoice, transport: Transport) throws {
    try SocketCloseTests.flushesAfterPeerEnd(backend, transport, close: false)
  }

  static func flushesAfterPeerEnd(_ backend: EventLoop.BackendChoice, _ transport: Transport, close: Bool) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(sendHighWatermark: 64 << 20, sendLowWatermark: 1 << 20)
    let (a, b) = try socketPair(transport, loop, options: options)
    defer {
      a.abort()
      b.abort()
    }
    // 16 MiB: more than the kernel buffers hold while b does not read, so
    // most of it is still queued in a's transport when b's end arrives.
    let count = 32
    for i in 0..<count { #expect(try a.trySend([UInt8](repeating: UInt8(i), count: 512 * 1024))) }
    if close { try a.close() } else { try a.shutdownWrite() }
    try b.shutdownWrite()
    var got = 0
    var intact = true
    var ended = false
    #expect(
      eventually(60) {
        while !ended {
          switch (try? b.tryReceive()) ?? .endOfStream {
          case .message(let m):
            if m.count != 512 * 1024 || m.first != UInt8(got) || m.last != UInt8(got) { intact = false }
            got += 1
          case .endOfStream: ended = true
          case .wouldBlock: return false
          }
        }
        return true
      })
    #expect(got == count, "received \(got) of \(count) messages before end-of-stream")
    #expect(intact)
    #expect(eventually { a.connectionState == .closed }, "a closed once flushed")
    if !close { #expect(try a.tryReceive() == .endOfStream) }
  }
}
