import Glibc
import TestSupport
import Testing

@testable import UserProto

/// The transports other than TCP: Unix-domain streams and UDP datagrams.
@Suite("Transports", .testThreads)
struct TransportTests {
  @Test("Unix-domain stream: listener, connect, messages both ways, half-close", arguments: loopBackends)
  func unixStream(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let path = "/tmp/userproto-test-\(getpid())-\(backend == .ioUring ? "u" : "e").sock"
    unlink(path)
    defer { unlink(path) }
    let listener = try ProtocolListener<FramedSocket>(on: try SocketAddress(unixPath: path), loop: loop)
    defer { try? listener.close() }
    #expect(listener.localAddress.family == AF_UNIX)
    let client = try FramedSocket.connect(to: try SocketAddress(unixPath: path), loop: loop)
    defer { client.abort() }
    var server: FramedSocket?
    #expect(
      eventually {
        server = try? listener.tryAccept(); return server != nil
      })
    let accepted = try #require(server)
    defer { accepted.abort() }
    let big = [UInt8](repeating: 7, count: 200_000)
    #expect(try client.trySend([1, 2, 3]))
    #expect(try client.trySend(big))
    #expect(eventually { (try? accepted.tryReceive()) == .message([1, 2, 3]) })
    #expect(eventually { (try? accepted.tryReceive()) == .message(big) })
    #expect(try accepted.trySend([9]))
    #expect(eventually { (try? client.tryReceive()) == .message([9]) })
    try client.shutdownWrite()
    #expect(eventually { (try? accepted.tryReceive()) == .endOfStream })
    #expect(eventually { pollEvents(accepted.fileDescriptor) == [.readable, .writable] })
  }

  @Test("UDP: each message is one datagram, both ways", arguments: loopBackends)
  func udp(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // Two UDP sockets on fixed ephemeral ports, connected to each other.
    let (portA, portB) = try (freeUDPPort(), freeUDPPort())
    let a = try ProtocolSocket.udp(
      local: try SocketAddress(ipv4: "127.0.0.1", port: portA),
      remote: try SocketAddress(ipv4: "127.0.0.1", port: portB),
      loop: loop)
    defer { a.abort() }
    let b = try ProtocolSocket.udp(
      local: try SocketAddress(ipv4: "127.0.0.1", port: portB),
      remote: try SocketAddress(ipv4: "127.0.0.1", port: portA),
      loop: loop)
    defer { b.abort() }
    #expect(eventually { a.connectionState == .connected && b.connectionState == .connected })
    // Datagrams keep their boundaries, including large ones (above the
    // stream receive buffers' 16 KiB) and empty ones.
    let messages: [[UInt8]] = [[1], [2, 3], [UInt8](repeating: 4, count: 40_000), []]
    for m in messages { #expect(try a.trySend(m)) }
    var got: [[UInt8]] = []
    #expect(
      eventually {
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock { got.append(m) }
        return got.count >= 3
      })
    // Compare sizes and contents without printing 40 KB on failure.
    #expect(got.count >= 3 && got.prefix(3).map(\.count) == [1, 2, 40_000])
    #expect(got.count >= 3 && Array(got.prefix(3)) == Array(messages.prefix(3)))
    #expect(pollEvents(a.fileDescriptor) == [.writable])
    #expect(try b.trySend([42]))
    #expect(eventually { (try? a.tryReceive()) == .message([42]) })
  }

  func freeUDPPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
    _ = any.withSockaddr { bind(fd, $0, $1) }
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
    }
    return UInt16(bigEndian: address.sin_port)
  }
}
