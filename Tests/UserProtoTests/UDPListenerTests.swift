import Glibc
import TestSupport
import Testing

@testable import UserProto

/// A `udp://` listener: one unconnected UDP socket, a pipe per peer address.
@Suite("UDP listener", .timeLimit(.minutes(2)), .testThreads)
struct UDPListenerTests {
  /// The addresses of `socket`'s pipes, local or remote.
  func addresses<H>(_ socket: Socket<H>, remote: Bool) throws -> Set<SocketAddress> {
    Set(
      try socket.withHandlerAndWait { _, context in
        context.pipes.compactMap { remote ? $0.remoteAddress : $0.localAddress }
      })
  }

  @Test(
    "a pipe per peer address; each peer gets back only its own datagrams, in order, empty ones included",
    arguments: loopBackends)
  func pipePerPeer(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("udp://127.0.0.1:0")
    let a = try Socket(DatagramClient(), loop: loop)
    defer { a.abort() }
    let b = try Socket(DatagramClient(), loop: loop)
    defer { b.abort() }
    try a.dial(url)
    try b.dial(url)
    #expect(eventually { a.pipeCount == 1 && b.pipeCount == 1 })
    for m in [Array("a1".utf8), Array("a2".utf8), []] { #expect(try a.trySend(m)) }
    #expect(try b.trySend(Array("b1".utf8)))
    #expect(receiveSoon(a) == Array("a1".utf8))
    #expect(receiveSoon(a) == Array("a2".utf8))
    #expect(receiveSoon(a) == [])
    #expect(receiveSoon(b) == Array("b1".utf8))
    #expect(try a.tryReceive() == .wouldBlock)
    #expect(try b.tryReceive() == .wouldBlock)
    // Two peers, two pipes, whose remote addresses are the clients' own.
    #expect(server.pipeCount == 2)
    let clients = try addresses(a, remote: false).union(addresses(b, remote: false))
    let servers = try addresses(server, remote: true)
    #expect(clients.count == 2 && servers == clients)
    // The largest UDP datagram over IPv4 goes through whole.
    let big = [UInt8](repeating: 2, count: 65_507)
    #expect(try a.trySend(big))
    #expect(receiveSoon(a) == big)
    #expect(server.statistics.datagramDrops == 0)
  }

  @Test(
    "a message larger than a UDP datagram is refused at the call; nothing is queued, counted or lost",
    arguments: loopBackends)
  func oversizeDatagram(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("udp://127.0.0.1:0")
    let a = try Socket(DatagramClient(), loop: loop)
    defer { a.abort() }
    try a.dial(url)
    #expect(eventually { a.pipeCount == 1 })
    // The dialer's side, and a socket that only listens on udp://.
    let listening = try Socket(DatagramClient(), loop: loop)
    defer { listening.abort() }
    try listening.listen("udp://127.0.0.1:0")
    for (socket, size) in [(a, 65_508), (listening, 70_000)] {
      do {
        _ = try socket.trySend([UInt8](repeating: 1, count: size))
        Issue.record("a message of \(size) bytes, larger than a datagram, was accepted")
      } catch {
        #expect(error == .messageTooLarge(size: size, limit: 65_507))
      }
    }
    // Nothing was sent or failed; the pipe is the same and still works.
    #expect(try a.trySend([5]))
    #expect(receiveSoon(a) == [5])
    let s = a.statistics
    #expect(s.messagesSent == 1 && s.pipeFailures == 0 && s.pipesAdded == 1 && s.reconnects == 0, "\(s)")
  }

  @Test(
    "while the application does not read, datagrams are dropped and counted; none is lost uncounted",
    arguments: loopBackends)
  func pausedDrops(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // Reading pauses at one queued 100-byte datagram.
    let options = SocketOptions(receiveHighWatermark: 100, receiveLowWatermark: 0)
    let server = try Socket(DatagramClient(), loop: loop, options: options)
    defer { server.abort() }
    let url = try server.listen("udp://127.0.0.1:0")
    let client = try Socket(DatagramClient(), loop: loop)
    defer { client.abort() }
    try client.dial(url)
    #expect(eventually { client.pipeCount == 1 })
    let datagram = [UInt8](repeating: 9, count: 100)
    #expect(try client.trySend(datagram))
    #expect(eventually { pollEvents(server.fileDescriptor).contains(.readable) })
    for _ in 0..<5 { #expect(try client.trySend(datagram)) }
    #expect(eventually { server.statistics.datagramDrops == 5 }, "\(server.statistics)")
    // The queued one is still there, and reading resumes once it is taken.
    #expect(receiveSoon(server) == datagram)
    #expect(try client.trySend([7]))
    #expect(receiveSoon(server) == [7])
    #expect(server.statistics.datagramDrops == 5)
    #expect(server.statistics.messagesReceived == 2)
  }

  @Test(
    "1,000 peers made, answered and closed leak no fd; the UDP socket closes with the last", arguments: loopBackends)
  func noLeaks(backend: EventLoop.BackendChoice) throws {
    let (status, values) = try runCheck(["udp-leak", backend == .ioUring ? "io_uring" : "epoll", "1000"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
    // Closing the listener left the UDP socket and the last peer's mask fd.
    let before = Int(values["before"] ?? "") ?? 0
    #expect(values["listenerClosed"].flatMap { Int($0) }.map { $0 > before } == true, "\(values)")
  }

  @Test("IPv6: a UDP listener on ::1", .enabled(if: ipv6LoopbackAvailable, "no IPv6 here"), arguments: loopBackends)
  func ipv6(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("udp://[::1]:0")
    let a = try Socket(DatagramClient(), loop: loop)
    defer { a.abort() }
    try a.dial(url)
    #expect(eventually { a.pipeCount == 1 })
    #expect(try a.trySend([6]))
    #expect(receiveSoon(a) == [6])
    #expect(try addresses(server, remote: true) == addresses(a, remote: false))
  }
}
