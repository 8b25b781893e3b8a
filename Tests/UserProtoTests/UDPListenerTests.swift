import Glibc
import TestSupport
import Testing

@testable import UserProto

/// `ProtocolListener.udp`: one unconnected UDP socket, one protocol socket
/// per peer address.
@Suite("UDP listener", .testThreads)
struct UDPListenerTests {
  /// A connected UDP client socket on an ephemeral port of 127.0.0.1.
  func client(of listener: ProtocolListener<ProtocolSocket>, _ loop: EventLoop) throws -> ProtocolSocket {
    try ProtocolSocket.udp(
      local: try SocketAddress(ipv4: "127.0.0.1", port: 0), remote: listener.localAddress, loop: loop)
  }

  func receive(_ socket: ProtocolSocket) -> [UInt8]? {
    var got: [UInt8]?
    _ = eventually {
      if case .message(let m) = (try? socket.tryReceive()) ?? .wouldBlock { got = m }
      return got != nil
    }
    return got
  }

  @Test(
    "one socket per peer address, readable listener until taken; each socket talks to its own peer only",
    arguments: loopBackends)
  func socketPerPeer(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<ProtocolSocket>.udp(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    defer { try? listener.close() }
    #expect(listener.localAddress.port != 0)
    #expect(pollEvents(listener.fileDescriptor) == [])
    let a = try client(of: listener, loop)
    defer { a.abort() }
    let b = try client(of: listener, loop)
    defer { b.abort() }
    #expect(eventually { a.connectionState == .connected && b.connectionState == .connected })
    #expect(try a.trySend(Array("a1".utf8)))
    #expect(eventually { pollEvents(listener.fileDescriptor) == [.readable] })
    #expect(try a.trySend(Array("a2".utf8)))
    #expect(try a.trySend([]))
    let fromA = try #require(acceptSoon(listener))
    defer { fromA.abort() }
    #expect(try b.trySend(Array("b1".utf8)))
    let fromB = try #require(acceptSoon(listener))
    defer { fromB.abort() }
    #expect(try listener.tryAccept() == nil)
    #expect(pollEvents(listener.fileDescriptor) == [])

    #expect(fromA.remoteAddress == a.localAddress && fromB.remoteAddress == b.localAddress)
    #expect(fromA.localAddress == listener.localAddress)
    #expect(fromA.maximumDatagramSize == 65_507)
    // In order per peer, empty datagrams included; no datagram of A reached B.
    #expect(receive(fromA) == Array("a1".utf8))
    #expect(receive(fromA) == Array("a2".utf8))
    #expect(receive(fromA) == [])
    #expect(receive(fromB) == Array("b1".utf8))
    #expect(try fromB.tryReceive() == .wouldBlock)
    // Replies leave from the listener's address, which the connected
    // clients only accept datagrams from.
    #expect(try fromA.trySend(Array("to a".utf8)))
    #expect(try fromB.trySend(Array("to b".utf8)))
    #expect(receive(a) == Array("to a".utf8))
    #expect(receive(b) == Array("to b".utf8))
    #expect(try a.tryReceive() == .wouldBlock)
    // Larger than any UDP datagram: refused at once, nothing queued.
    #expect(throws: SocketError.messageTooLarge(size: 70_000, limit: 65_507)) {
      try fromA.trySend([UInt8](repeating: 1, count: 70_000))
    }
    let big = [UInt8](repeating: 2, count: 65_507)
    #expect(try fromA.trySend(big))
    #expect(receive(a) == big)
    #expect(listener.droppedDatagrams == 0)
  }

  @Test(
    "beyond the backlog, new peers' datagrams are dropped and counted; known peers still get through",
    arguments: loopBackends)
  func backlog(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<ProtocolSocket>.udp(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, backlog: 1)
    defer { try? listener.close() }
    let a = try client(of: listener, loop)
    defer { a.abort() }
    let b = try client(of: listener, loop)
    defer { b.abort() }
    #expect(try a.trySend([1]))
    #expect(eventually { pollEvents(listener.fileDescriptor) == [.readable] })
    #expect(try b.trySend([2]))
    #expect(eventually { listener.droppedDatagrams == 1 })
    #expect(try a.trySend([3]))  // A's socket exists: queued for it
    let fromA = try #require(acceptSoon(listener))
    defer { fromA.abort() }
    #expect(receive(fromA) == [1])
    #expect(receive(fromA) == [3])
    #expect(try listener.tryAccept() == nil)
    // Room again: B's next datagram makes its socket.
    #expect(try b.trySend([4]))
    let fromB = try #require(acceptSoon(listener))
    defer { fromB.abort() }
    #expect(fromB.remoteAddress == b.localAddress)
    #expect(receive(fromB) == [4])
    #expect(listener.droppedDatagrams == 1)
  }

  @Test(
    "a peer whose socket stopped reading loses datagrams, counted; the other peers lose nothing",
    arguments: loopBackends)
  func pausedPeerDrops(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // Reading pauses at one queued 100-byte datagram.
    let options = SocketOptions(receiveHighWatermark: 100, receiveLowWatermark: 0)
    let listener = try ProtocolListener<ProtocolSocket>.udp(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, options: options)
    defer { try? listener.close() }
    let slow = try client(of: listener, loop)
    defer { slow.abort() }
    let other = try client(of: listener, loop)
    defer { other.abort() }
    let datagram = [UInt8](repeating: 9, count: 100)
    #expect(try slow.trySend(datagram))
    let fromSlow = try #require(acceptSoon(listener))
    defer { fromSlow.abort() }
    #expect(eventually { pollEvents(fromSlow.fileDescriptor).contains(.readable) })
    for _ in 0..<5 { #expect(try slow.trySend(datagram)) }
    #expect(eventually { listener.droppedDatagrams == 5 }, "\(listener.droppedDatagrams)")
    #expect(try other.trySend([1]))
    let fromOther = try #require(acceptSoon(listener))
    defer { fromOther.abort() }
    #expect(receive(fromOther) == [1])
    // The queued one is still there, and reading resumes once it is taken.
    #expect(receive(fromSlow) == datagram)
    #expect(try slow.trySend([7]))
    #expect(receive(fromSlow) == [7])
    #expect(listener.droppedDatagrams == 5)
  }

  @Test(
    "closing a peer's socket forgets the peer; the listener's close keeps accepted sockets working",
    arguments: loopBackends)
  func closeSemantics(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<ProtocolSocket>.udp(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    let a = try client(of: listener, loop)
    defer { a.abort() }
    #expect(try a.trySend([1]))
    let first = try #require(acceptSoon(listener))
    #expect(receive(first) == [1])
    // A graceful close of a datagram socket finishes once its output is
    // out (no peer end to wait for).
    #expect(try first.trySend([2]))
    try first.close()
    #expect(receive(a) == [2])
    #expect(eventually { first.connectionState == .closed })
    // The same address again is a new peer.
    #expect(try a.trySend([3]))
    let second = try #require(acceptSoon(listener))
    defer { second.abort() }
    #expect(second !== first && second.remoteAddress == a.localAddress)
    #expect(receive(second) == [3])
    // After the listener closes: no new peers (their datagrams are dropped),
    // but the accepted socket still talks to its peer.
    try listener.close()
    #expect(throws: SocketError.closed) { try listener.tryAccept() }
    let late = try client(of: listener, loop)
    defer { late.abort() }
    #expect(try late.trySend([4]))
    #expect(eventually { listener.droppedDatagrams == 1 })
    #expect(try a.trySend([5]))
    #expect(receive(second) == [5])
    #expect(try second.trySend([6]))
    #expect(receive(a) == [6])
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
    let listener = try ProtocolListener<ProtocolSocket>.udp(on: try SocketAddress(ipv6: "::1", port: 0), loop: loop)
    defer { try? listener.close() }
    let a = try ProtocolSocket.udp(
      local: try SocketAddress(ipv6: "::1", port: 0), remote: listener.localAddress, loop: loop)
    defer { a.abort() }
    #expect(try a.trySend([6]))
    let peer = try #require(acceptSoon(listener))
    defer { peer.abort() }
    #expect(peer.remoteAddress == a.localAddress && peer.maximumDatagramSize == 65_527)
    #expect(receive(peer) == [6])
    #expect(try peer.trySend([7]))
    #expect(receive(a) == [7])
  }
}
