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

@Suite("Connection addresses and IPv6", .timeLimit(.minutes(2)), .testThreads)
struct ConnectionAddressTests {
  /// What one pipe of a socket says of itself, read on the loop.
  struct PipeView: Sendable {
    var local: SocketAddress?
    var remote: SocketAddress?
    /// TCP_NODELAY on its kernel socket (-1: not a stream transport).
    var noDelay: Int32
  }

  func pipes<H>(_ socket: Socket<H>) throws -> [PipeView] {
    try socket.withHandlerAndWait { _, context in
      context.pipes.map { pipe in
        var value: Int32 = -1
        if let fd = (pipe.transport as? StreamTransport)?.fd {
          var length = socklen_t(4)
          if getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) != 0 { value = -2 }
        }
        return PipeView(local: pipe.localAddress, remote: pipe.remoteAddress, noDelay: value)
      }
    }
  }

  /// A socket listening on `host`, another dialing it, a message each way;
  /// then each pipe's addresses and TCP_NODELAY on both kernel sockets.
  func tcpRoundTrip(host: String, backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    guard case .tcp(let listening) = try server.listen(.tcp(try SocketAddress(ip: host, port: 0))) else {
      Issue.record("listen returned another scheme")
      return
    }
    #expect(listening.host == host && listening.port != 0, "\(listening)")
    let client = try Socket(DatagramClient(), loop: loop)
    defer { client.abort() }
    try client.dial(.tcp(listening))
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    #expect(try client.trySend([1, 2, 3]))
    #expect(receiveSoon(client) == [1, 2, 3])

    let dialed = try #require(try pipes(client).first)
    let accepted = try #require(try pipes(server).first)
    #expect(dialed.remote == listening)
    #expect(accepted.local == listening)
    let clientAddress = try #require(dialed.local)
    #expect(clientAddress.host == host && clientAddress.port != listening.port, "\(clientAddress)")
    #expect(accepted.remote == clientAddress)
    // Nagle off on both ends, whatever the family (it was IPv4 only once).
    #expect(dialed.noDelay == 1 && accepted.noDelay == 1, "\(dialed), \(accepted)")
  }

  @Test("TCP over IPv4: each pipe's addresses, and TCP_NODELAY on both", arguments: loopBackends)
  func ipv4(backend: EventLoop.BackendChoice) throws {
    try tcpRoundTrip(host: "127.0.0.1", backend: backend)
  }

  @Test(
    "TCP over IPv6 loopback: listen, dial, messages both ways, addresses, TCP_NODELAY",
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
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    let url = try server.listen("udp://[::1]:0")
    let client = try Socket(DatagramClient(), loop: loop)
    defer { client.abort() }
    try client.dial(url)
    #expect(eventually { client.pipeCount == 1 })
    // The IPv6 limit, 20 bytes above IPv4's: the largest goes through, one more is refused.
    let big = [UInt8](repeating: 6, count: 65_527)
    #expect(try client.trySend(big))
    #expect(receiveSoon(client) == big)
    do {
      _ = try client.trySend([UInt8](repeating: 6, count: 65_528))
      Issue.record("a datagram over the IPv6 limit was accepted")
    } catch {
      #expect(error == .messageTooLarge(size: 65_528, limit: 65_527))
    }
    let dialed = try #require(try pipes(client).first)
    #expect(dialed.remote == url.socketAddressForTest)
    #expect(try pipes(server).first?.remote == dialed.local)
  }

  @Test("an inproc:// pipe has no addresses")
  func inprocPipe() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let name = uniqueName("addresses")
    let server = try Socket(DatagramEcho(), loop: loop)
    defer { server.abort() }
    try server.listen("inproc://\(name)")
    let client = try Socket(DatagramClient(), loop: loop)
    defer { client.abort() }
    try client.dial("inproc://\(name)")
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    let views = try pipes(client) + pipes(server)
    #expect(views.count == 2 && views.allSatisfy { $0.local == nil && $0.remote == nil }, "\(views)")
  }
}

extension TransportURL {
  /// The socket address of a `tcp://` or `udp://` URL.
  var socketAddressForTest: SocketAddress? {
    switch self {
    case .tcp(let address), .udp(let address): address
    default: nil
    }
  }
}
