import Glibc
import TestSupport
import Testing

@testable import UserProto

@Suite("Socket addresses", .testThreads)
struct SocketAddressTests {
  @Test("IPv4 and IPv6 addresses parse, print and keep their port; a zone names the interface")
  func parseAndPrint() throws {
    let v4 = try SocketAddress(ipv4: "127.0.0.1", port: 5555)
    #expect(v4.family == AF_INET && v4.isIP && v4.host == "127.0.0.1" && v4.port == 5555)
    #expect(v4.description == "127.0.0.1:5555")
    let v6 = try SocketAddress(ipv6: "::1", port: 5555)
    #expect(v6.family == AF_INET6 && v6.isIP && v6.host == "::1" && v6.port == 5555)
    #expect(v6.description == "[::1]:5555")
    // inet_ntop's canonical form.
    #expect(try SocketAddress(ipv6: "2001:0db8:0000:0000:0000:0000:0000:0001", port: 1).host == "2001:db8::1")
    let lo = if_nametoindex("lo")
    try #require(lo != 0, "no loopback interface")
    #expect(try SocketAddress(ipv6: "fe80::1%lo", port: 7).description == "[fe80::1%\(lo)]:7")
    #expect(try SocketAddress(ipv6: "fe80::1%\(lo)", port: 7) == SocketAddress(ipv6: "fe80::1%lo", port: 7))
    #expect(try SocketAddress(ipv6: "fe80::1", port: 7, scopeID: lo) == SocketAddress(ipv6: "fe80::1%lo", port: 7))
    // Either family from numeric text.
    #expect(try SocketAddress(ip: "10.1.2.3", port: 9) == SocketAddress(ipv4: "10.1.2.3", port: 9))
    #expect(try SocketAddress(ip: "::ffff:10.1.2.3", port: 9).family == AF_INET6)
    #expect(try SocketAddress(ip: "::1", port: 9).withPort(10) == SocketAddress(ipv6: "::1", port: 10))
    #expect(try SocketAddress(ipv4: "1.2.3.4", port: 9).withPort(10).description == "1.2.3.4:10")
    let unix = try SocketAddress(unixPath: "/tmp/x.sock")
    #expect(unix.withPort(10) == unix && unix.port == nil && unix.host == nil && !unix.isIP)
  }

  @Test("text that is not an address of the family is a clear error")
  func refusesBadText() {
    for text in ["", "1.2.3", "::1", "example.com", "1.2.3.4.5"] {
      #expect(throws: IOError.self, "\(text)") { try SocketAddress(ipv4: text, port: 1) }
    }
    for text in ["", "1.2.3.4", ":::1", "fe80::1%", "fe80::1%no-such-interface-0", "[::1]"] {
      #expect(throws: IOError.self, "\(text)") { try SocketAddress(ipv6: text, port: 1) }
    }
    do {
      _ = try SocketAddress(ip: "localhost", port: 1)
      Issue.record("a host name was taken for an address")
    } catch {
      #expect(error.code == EINVAL && "\(error)".contains("neither an IPv4 nor an IPv6 address"), "\(error)")
    }
  }

  // Found by Fuzz/Sources/SocketAddressFuzzer and URLFuzzer: inet_pton,
  // if_nametoindex and getaddrinfo read a C string, which ends at the
  // first NUL byte, so "127.0.0.1\0.example" was taken for 127.0.0.1 and
  // "localhost\0.example" was looked up as localhost.
  @Test("text with a NUL byte is not an address, and no host name is looked up for it")
  func refusesNUL() {
    for text in ["127.0.0.1\0", "127.0.0.1\0.example", "\0"] {
      #expect(throws: IOError.self, "\(text.debugDescription)") { try SocketAddress(ipv4: text, port: 1) }
      #expect(throws: IOError.self, "\(text.debugDescription)") { try SocketAddress(ip: text, port: 1) }
    }
    for text in ["::1\0", "::1\0.example", "fe80::1%lo\0", "fe80::1%lo\0x"] {
      #expect(throws: IOError.self, "\(text.debugDescription)") { try SocketAddress(ipv6: text, port: 1) }
    }
    for url in [
      "tcp://127.0.0.1\0.example:5555", "tcp://localhost\0.example:5555", "udp://localhost\0:1",
      "tcp6://[::1\0]:1", "tcp://[::1\0.example]:1",
    ] {
      #expect(throws: SocketError.self, "\(url.debugDescription)") { try TransportURL(url, for: .dial) }
      #expect(throws: SocketError.self, "\(url.debugDescription)") { try TransportURL(url, for: .listen) }
    }
    // The same text without the NUL byte and what follows it still parses.
    #expect(throws: Never.self) { try SocketAddress(ipv4: "127.0.0.1", port: 1) }
    #expect(throws: Never.self) { try TransportURL("tcp://localhost:5555", for: .dial) }
  }

  @Test("a C sockaddr is taken when its family and length are right, and refused otherwise")
  func fromSockaddr() throws {
    var v6 = sockaddr_in6()
    v6.sin6_family = sa_family_t(AF_INET6)
    v6.sin6_port = UInt16(4242).bigEndian
    #expect(inet_pton(AF_INET6, "::1", &v6.sin6_addr) == 1)
    let full = try withUnsafePointer(to: &v6) {
      try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        try SocketAddress(sockaddr: $0, length: socklen_t(MemoryLayout<sockaddr_in6>.size))
      }
    }
    #expect(full == (try SocketAddress(ipv6: "::1", port: 4242)))
    // Cut short: a sockaddr_in's worth of an IPv6 address.
    #expect(throws: IOError.self) {
      try withUnsafePointer(to: &v6) {
        try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          try SocketAddress(sockaddr: $0, length: socklen_t(MemoryLayout<sockaddr_in>.size))
        }
      }
    }
    var packet = sockaddr()
    packet.sa_family = sa_family_t(AF_PACKET)
    do {
      _ = try SocketAddress(sockaddr: &packet, length: socklen_t(MemoryLayout<sockaddr>.size))
      Issue.record("AF_PACKET accepted")
    } catch {
      #expect(error.code == EAFNOSUPPORT, "\(error)")
    }
  }
}

@Suite("Connection addresses and IPv6", .testThreads)
struct ConnectionAddressTests {
  /// A listener on `host`, a client connected to it, a message each way;
  /// then each side's addresses and TCP_NODELAY on both kernel sockets.
  func tcpRoundTrip(host: String, backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<FramedSocket>(on: try SocketAddress(ip: host, port: 0), loop: loop)
    defer { try? listener.close() }
    let listening = listener.localAddress
    #expect(listening.host == host && listening.port != 0, "\(listening)")
    let client = try FramedSocket.connect(to: listening, loop: loop)
    defer { client.abort() }
    let accepted = try #require(acceptSoon(listener))
    defer { accepted.abort() }
    #expect(try client.trySend([1, 2, 3]))
    #expect(eventually { (try? accepted.tryReceive()) == .message([1, 2, 3]) })
    #expect(try accepted.trySend([4]))
    #expect(eventually { (try? client.tryReceive()) == .message([4]) })

    #expect(client.remoteAddress == listening)
    #expect(accepted.localAddress == listening)
    let clientAddress = try #require(client.localAddress)
    #expect(clientAddress.host == host && clientAddress.port != listening.port, "\(clientAddress)")
    #expect(accepted.remoteAddress == clientAddress)
    // Nagle off on both ends, whatever the family (it was IPv4 only once).
    for socket in [client, accepted] {
      let noDelay = try onLoop(loop) { () -> Int32 in
        guard let fd = (socket.transport as? StreamTransport)?.fd else { return -1 }
        var value: Int32 = 0
        var length = socklen_t(4)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) == 0 else { return -2 }
        return value
      }
      #expect(noDelay == 1, "TCP_NODELAY on \(socket.localAddress.map { "\($0)" } ?? "?")")
    }
    // Kept after the connection ends, for logging.
    client.abort()
    #expect(client.remoteAddress == listening)
  }

  @Test("TCP over IPv4: each side's addresses, and TCP_NODELAY on both", arguments: loopBackends)
  func ipv4(backend: EventLoop.BackendChoice) throws {
    try tcpRoundTrip(host: "127.0.0.1", backend: backend)
  }

  @Test(
    "TCP over IPv6 loopback: listener, connect, messages both ways, addresses, TCP_NODELAY",
    .enabled(if: ipv6LoopbackAvailable, "this kernel cannot bind ::1 (no IPv6)"),
    arguments: loopBackends)
  func ipv6(backend: EventLoop.BackendChoice) throws {
    try tcpRoundTrip(host: "::1", backend: backend)
  }

  @Test(
    "UDP over IPv6: datagrams both ways, the IPv6 datagram limit, the peer's address",
    .enabled(if: ipv6LoopbackAvailable, "this kernel cannot bind ::1 (no IPv6)"),
    arguments: loopBackends)
  func udp6(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (portA, portB) = try (freeUDP6Port(), freeUDP6Port())
    let addressA = try SocketAddress(ipv6: "::1", port: portA)
    let addressB = try SocketAddress(ipv6: "::1", port: portB)
    let a = try ProtocolSocket.udp(local: addressA, remote: addressB, loop: loop)
    defer { a.abort() }
    let b = try ProtocolSocket.udp(local: addressB, remote: addressA, loop: loop)
    defer { b.abort() }
    #expect(eventually { a.connectionState == .connected && b.connectionState == .connected })
    #expect(a.maximumDatagramSize == 65_527)
    #expect(a.localAddress == addressA && a.remoteAddress == addressB)
    let big = [UInt8](repeating: 6, count: 60_000)
    #expect(try a.trySend(big))
    #expect(eventually { (try? b.tryReceive()) == .message(big) })
    #expect(try b.trySend([7]))
    #expect(eventually { (try? a.tryReceive()) == .message([7]) })
  }

  @Test("an in-memory pair has no addresses")
  func memoryPair() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(eventually { a.connectionState == .connected })
    #expect(a.localAddress == nil && a.remoteAddress == nil && b.remoteAddress == nil)
  }

  func freeUDP6Port() throws -> UInt16 {
    let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    _ = try SocketAddress(ipv6: "::1", port: 0).withSockaddr { bind(fd, $0, $1) }
    return try #require(Sockets.localAddress(fd).port)
  }
}
