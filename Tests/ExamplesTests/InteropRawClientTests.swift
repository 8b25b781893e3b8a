import ExampleProtocols
import TestSupport
import Testing
import UserProto

/// Raw TCP clients speaking SP/TCP by hand against our echo server, next to
/// a well-behaved REQ socket: bad ones must lose their own connection only.
@Suite("SP/TCP raw clients against the echo server", .timeLimit(.minutes(1)), .testThreads)
struct InteropRawClientTests {
  enum Misbehaviour: String, CaseIterable, Sendable, CustomStringConvertible {
    /// `01 'S' 'P' 00` instead of `00 'S' 'P' 00`.
    case wrongMagic
    /// A correct header for PUB (0x20), which a REP does not accept.
    case wrongProtocol
    /// A REQ header whose reserved last byte is not zero.
    case reservedBytes
    /// One good request, then a frame cut short and the write side shut.
    case truncatedFrame
    /// One good request, then a length of 2 MiB (the limit is 1 MiB).
    case oversizeFrame
    var description: String { rawValue }

    /// What the server must give as the reason it dropped the connection.
    var reason: String {
      switch self {
      case .wrongMagic: "protocol violation: not an SP peer: header 01 53 50 00 00 30 00 00"
      case .wrongProtocol: "protocol violation: incompatible SP peer: protocol 0x20 (PUB), rep needs 0x30 (REQ)"
      case .reservedBytes: "protocol violation: SP header with non-zero reserved bytes: 00 53 50 00 00 30 00 01"
      case .truncatedFrame: "protocol violation: the peer closed mid-frame after 18 of 108 bytes"
      case .oversizeFrame: "message of 2097152 bytes exceeds the limit of 1048576 bytes"
      }
    }
  }

  static let repHeader = spHeader(0x31)

  @Test(
    "a bad client loses its connection at once; the others are served", arguments: interopBackends,
    Misbehaviour.allCases)
  func badClient(backend: EventLoop.BackendChoice, misbehaviour: Misbehaviour) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      let good = try ReqSocket.connect(to: server.localAddress, loop: loop)
      defer { good.abort() }
      #expect(try await roundTrip(good, "before") == "before")
      #expect(server.connectionCount == 1)

      let raw = try RawClient(connectingTo: server.localAddress)
      // Our side sends its header at once, without waiting for the peer's.
      #expect(await raw.read(8, within: .seconds(5)).bytes == Self.repHeader)
      let request = spRequest(id: 0x8000_0001, Array("raw request".utf8))
      var served = 2
      switch misbehaviour {
      case .wrongMagic:
        try raw.send(spHeader(0x30, magic: [0x01, 0x53, 0x50, 0x00]) + request)
      case .wrongProtocol:
        try raw.send(spHeader(0x20) + request)
      case .reservedBytes:
        try raw.send(Array(spHeader(0x30).dropLast()) + [0x01] + request)
      case .truncatedFrame, .oversizeFrame:
        // The connection works until the bad frame.
        try raw.send(spHeader(0x30) + request)
        #expect(await raw.read(request.count, within: .seconds(5)).bytes == request)
        served += 1
        if misbehaviour == .truncatedFrame {
          try raw.send(spLength(100) + [UInt8](repeating: 0x80, count: 10))
          raw.shutdownWrite()
        } else {
          try raw.send(spLength(2 << 20))
        }
      }
      let end = await raw.waitForClose(within: .seconds(5))
      #expect(end.closure != nil, "still open after \(misbehaviour)")
      #expect(end.bytes.isEmpty, "no reply on a bad connection: \(end.bytes)")
      // Decided from the bytes alone (not the 10 s header timeout), and the
      // server says why.
      #expect(await waitUntil(.seconds(5)) { server.failures.count == 1 }, "failures: \(server.failures.recent)")
      #expect(server.failures.recent.map(\.description) == [misbehaviour.reason])

      #expect(await waitUntil(.seconds(5)) { server.connectionCount == 1 }, "connections: \(server.connectionCount)")
      #expect(try await roundTrip(good, "after") == "after")
      #expect(server.requestsServed == served)
      // Only peers whose header was accepted count as connections.
      #expect(server.statistics.connectionsAccepted == served - 1)
    }
  }

  @Test("a well-formed raw client is served, up to a frame of exactly 1 MiB", arguments: interopBackends)
  func wellFormedClient(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      // Header and first request in one write, before reading the server's.
      let small = spRequest(id: 0x8000_0001, Array("small".utf8))
      try raw.send(spHeader(0x30) + small)
      #expect(await raw.read(8 + small.count, within: .seconds(5)).bytes == Self.repHeader + small)
      // A frame of 4 + (1 MiB - 4) bytes: exactly the limit.
      let big = spRequest(id: 0x8000_0002, [UInt8](repeating: 0x5a, count: (1 << 20) - 4))
      try raw.send(big)
      let reply = await raw.read(big.count, within: .seconds(10))
      #expect(reply.bytes.count == big.count && reply.bytes == big)
      #expect(server.requestsServed == 2)
      #expect(server.connectionCount == 1)
      #expect(server.statistics.connectionsAccepted == 1)
    }
  }

  @Test("the echo server lets go of a connection its peer closed cleanly", arguments: interopBackends)
  func cleanCloseReleasesConnection(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop)
      defer { server.close() }
      do {
        let raw = try RawClient(connectingTo: server.localAddress)
        let request = spRequest(id: 0x8000_0001, Array("bye".utf8))
        try raw.send(spHeader(0x30) + request)
        #expect(await raw.read(8 + request.count, within: .seconds(5)).bytes == Self.repHeader + request)
        #expect(server.connectionCount == 1)
      }  // closed here (FIN): a REQ peer that got its reply and exited
      // A peer's clean close ends the connection at the server too.
      #expect(await waitUntil(.seconds(2)) { server.connectionCount == 0 }, "connections: \(server.connectionCount)")
    }
  }
}
