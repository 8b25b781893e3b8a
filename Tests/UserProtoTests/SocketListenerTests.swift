import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

@Suite("Protocol listener", .testThreads)
struct SocketListenerTests {
  /// close() lands between the loop's check of `closed` and the queueing
  /// of a new connection: that connection must be aborted, not stranded.
  @Test("a connection accepted while the listener closes is aborted, not stranded", arguments: loopBackends)
  func closeDuringAdopt(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let made = Collector<FramedSocket>()
    let listener = try ProtocolListener<FramedSocket>(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, configure: { made.append($0) })
    // Weak: the listener keeps the hook, so a strong capture is a cycle that
    // keeps the listener, its loop and the accepted socket alive for good
    // (LeakSanitizer: 80 KB in about 100 allocations).
    try onLoop(loop) { listener.beforeQueueing = { [weak listener] in try? listener?.close() } }
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(client) }
    try #require(listener.localAddress.withSockaddr { connect(client, $0, $1) } == 0)
    #expect(eventually { made.count == 1 })
    let accepted = try #require(made.values.first)
    #expect(eventually { accepted.mask.isClosed }, "the socket was aborted")
    #expect(throws: SocketError.closed) { try listener.tryAccept() }
    // Its connection was closed: the client reads end-of-stream.
    var entry = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
    #expect(eventually { poll(&entry, 1, 0) == 1 })
    var byte: UInt8 = 0
    #expect(recv(client, &byte, 1, Int32(MSG_DONTWAIT)) == 0)
  }

  @Test("a failed mask fd write: queued connections are still handed out, then the failure is thrown")
  func maskWriteFailure() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<FramedSocket>(on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    defer { try? listener.close() }
    try listener.mask.close()  // every later write of its readiness fails
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(client) }
    try #require(listener.localAddress.withSockaddr { connect(client, $0, $1) } == 0)
    var accepted: FramedSocket?
    #expect(
      eventually {
        accepted = try? listener.tryAccept(); return accepted != nil
      }, "nothing lost")
    accepted?.abort()
    do {
      _ = try listener.tryAccept()
      Issue.record("tryAccept returned normally with a stale readiness")
    } catch {
      guard case .transport(let io) = error else {
        Issue.record("\(error)")
        return
      }
      #expect(io.operation.contains("listener mask fd update"), "\(io)")
    }
  }

  /// True when a socket of `type` can bind `address` now (its port is free).
  func canBind(_ address: SocketAddress, type: Int32) -> Bool {
    let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return address.withSockaddr { bind(fd, $0, $1) } == 0
  }

  @Test("a listener dropped without close releases its port and its fds (TCP and UDP)", arguments: loopBackends)
  func droppedListener(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
    var tcp: ProtocolListener<FramedSocket>? = try ProtocolListener(on: any, loop: loop)
    var udp: ProtocolListener<FramedSocket>? = try .udp(on: any, loop: loop)
    let (tcpAddress, udpAddress) = (tcp!.localAddress, udp!.localAddress)
    let masks = [tcp!.mask, udp!.mask]
    #expect(!canBind(tcpAddress, type: Int32(SOCK_STREAM.rawValue)), "the TCP port is taken while listening")
    #expect(!canBind(udpAddress, type: Int32(SOCK_DGRAM.rawValue)), "the UDP port is taken while bound")
    tcp = nil
    udp = nil
    #expect(eventually { canBind(tcpAddress, type: Int32(SOCK_STREAM.rawValue)) }, "TCP port released")
    #expect(eventually { canBind(udpAddress, type: Int32(SOCK_DGRAM.rawValue)) }, "UDP port released")
    #expect(masks.allSatisfy { $0.isClosed })
    #expect(eventually { (try? onLoop(loop) { loop.operationsInFlight }) == 0 }, "the accept and receive ended")
  }
}
