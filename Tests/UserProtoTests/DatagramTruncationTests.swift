import Glibc
import TestSupport
import Testing

@testable import UserProto

/// A datagram longer than the loop's receive buffer is dropped and counted,
/// never delivered cut short. UDP carries at most 65,527 bytes, which fit;
/// a Unix-domain datagram socket carries more.
@Suite("Datagram truncation", .testThreads)
struct DatagramTruncationTests {
  /// A connected pair of non-blocking Unix-domain datagram sockets.
  static func datagramPair() throws -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    try #require(
      socketpair(
        AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        == 0)
    var size: Int32 = 1 << 20
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    return (fds[0], fds[1])
  }

  /// Sends a buffer of exactly 64 KiB (fits), one just over it, and a small one.
  static func sendThree(_ fd: Int32) throws {
    for size in [65_536, 70_000, 10] {
      let bytes = [UInt8](repeating: UInt8(size % 251), count: size)
      try #require(send(fd, bytes, bytes.count, Int32(MSG_DONTWAIT)) == size, "send \(size): errno \(errno)")
    }
  }

  @Test(
    "receive(socket:datagrams:): the oversize datagram is counted, the others arrive whole", arguments: loopBackends)
  func connectedReceive(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try Self.datagramPair()
    defer {
      close(a)
      close(b)
    }
    try Self.sendThree(b)
    let sizes = Collector<Int>()
    let handle = try onLoop(loop) {
      try loop.receive(socket: a, datagrams: true) { result in
        if case .success(let bytes) = result { sizes.append(bytes.count) }
      }
    }
    #expect(eventually(5) { sizes.count >= 2 && loop.truncatedDatagrams >= 1 })
    #expect(sizes.values == [65_536, 10])
    #expect(loop.truncatedDatagrams == 1)
    try onLoop(loop) { loop.cancel(handle) }
  }

  @Test("receiveDatagrams(socket:): the oversize datagram is counted, the others arrive whole", arguments: loopBackends)
  func receiveWithSender(backend: EventLoop.BackendChoice) throws {
    let loop = try makeTestLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try Self.datagramPair()
    defer {
      close(a)
      close(b)
    }
    try Self.sendThree(b)
    let sizes = Collector<Int>()
    let handle = try onLoop(loop) {
      try loop.receiveDatagrams(socket: a) { result in
        if case .success(let datagram) = result { sizes.append(datagram.bytes.count) }
      }
    }
    #expect(eventually(5) { sizes.count >= 2 && loop.truncatedDatagrams >= 1 })
    #expect(sizes.values == [65_536, 10])
    #expect(loop.truncatedDatagrams == 1)
    try onLoop(loop) { loop.cancel(handle) }
  }
}
