import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// Inputs that used to trap: durations too long for the clock as SP
/// timeouts, and an SP socket type that declares no protocol ids.
@Suite("SP sockets take any input without trapping", .timeLimit(.minutes(1)), .testThreads)
struct SPNoTrapTests {
  @Test("a resend interval too long for the clock never resends", arguments: interopBackends)
  func hugeResendInterval(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let (req, rep, _) = try await SPProtocolTests.reqAgainstRawRep(loop)
      defer { req.abort() }
      req.resendInterval = .seconds(Int64.max)
      #expect(try req.trySend(Array("once".utf8)))
      let first = try #require(await rep.readFrame(within: .seconds(5)))
      // No resend comes (a wrapped deadline would resend at once, again and again).
      #expect(await rep.read(1, within: .milliseconds(300)).bytes.isEmpty)
      #expect(req.resends == 0)
      // The request is still awaited: its reply is delivered.
      let (id, _) = try #require(splitRequest(first))
      try rep.send(spRequest(id: id, Array("done".utf8)))
      #expect(try await nextMessage(req, within: .seconds(5)) == .message(Array("done".utf8)))
    }
  }

  @Test("a header timeout too long for the clock never drops the peer", arguments: interopBackends)
  func hugeHeaderTimeout(backend: EventLoop.BackendChoice) async throws {
    try await withLoop(backend) { loop in
      let server = try EchoServer(on: try loopback(0), loop: loop, headerTimeout: .seconds(Int64.max))
      defer { server.close() }
      let raw = try RawClient(connectingTo: server.localAddress)
      #expect(await raw.read(8, within: .seconds(5)).bytes == SPProtocolTests.repHeader)
      // No header from us: the connection stays open, nothing failed.
      let rest = await raw.read(1, within: .milliseconds(300))
      #expect(rest.bytes.isEmpty && rest.closure == nil)
      #expect(server.failures.count == 0)
    }
  }

  @Test("a dialed socket with a header timeout too long for the clock waits for the header")
  func hugeDialHeaderTimeout() async throws {
    try await withLoop(.epoll) { loop in
      let listener = try RawListener()
      let req = try ReqSocket.dial(listener.address, loop: loop, headerTimeout: .seconds(Int64.max))
      defer { req.abort() }
      let rep = try #require(await listener.accept(within: .seconds(5)))
      #expect(await rep.read(8, within: .seconds(5)).bytes == SPProtocolTests.reqHeader)
      try await Task.sleep(for: .milliseconds(300))
      #expect(req.connectionState == .connected)
    }
  }

  @Test("protocol ids come from the socket type's SPProtocolIdentity")
  func protocolIDs() async throws {
    try await withLoop(.epoll) { loop in
      let req = try ReqSocket(loop: loop)
      defer { req.abort() }
      #expect(req.protocolID == .req && req.peerProtocolID == .rep)
      #expect(req.header == spHeader(0x30))
      let sub = try SubSocket(loop: loop)
      defer { sub.abort() }
      #expect(sub.protocolID == .sub && sub.peerProtocolID == .pub)
      let pair = try PairSocket(loop: loop)
      defer { pair.abort() }
      #expect(pair.protocolID == .pair && pair.peerProtocolID == .pair)
      #expect(pair.header == spHeader(0x10))
    }
  }

  @Test("an SPSocket subclass without protocol ids cannot be created: a clear error, no trap")
  func noIdentity() async throws {
    try await withLoop(.epoll) { loop in
      let error = #expect(throws: SocketError.self) { try Anonymous(loop: loop) }
      #expect("\(error.map { "\($0)" } ?? "")".contains("SPProtocolIdentity"), "\(String(describing: error))")
      let listener = try RawListener()
      #expect(throws: SocketError.self) { try Anonymous.connect(to: listener.address, loop: loop) }
    }
  }

  // Found by Fuzz/Sources/SPFramesFuzzer (its corpus keeps both inputs as
  // seeds, regression-unlimited-length-*): with no size limit
  // (maximumMessageSize Int.max), a frame length of Int.max passed the
  // limit check, and adding the 8-byte prefix to it overflowed, a trap that
  // any peer could set off with 16 bytes.

  @Test("no size limit: a frame length of Int.max waits for its bytes instead of trapping (Socket<Handler>)")
  func unlimitedFrameLength() async throws {
    try await withLoop(.epoll) { loop in
      let pull = try Socket(Pull0Handler(), loop: loop, options: SocketOptions(maximumMessageSize: .max))
      defer { pull.abort() }
      let bound = try pull.listen("tcp://127.0.0.1:0")
      guard case .tcp(let address) = bound else { throw InteropFailure("listen gave \(bound)") }
      let raw = try RawClient(connectingTo: try loopback(try #require(address.port)))
      try raw.send(spHeader(0x50) + spLength(UInt64(Int.max)))
      #expect(await raw.read(8, within: .seconds(5)).bytes == spHeader(0x51))
      // The frame is incomplete, not an error: the pipe fails only when the
      // peer ends in the middle of it.
      raw.shutdownWrite()
      let failed = await waitUntilAsync(.seconds(5)) {
        let failures = (try? await pull.withHandler { h, _ in h.pipes.recentFailures }) ?? []
        return failures.last?.contains("closed mid-frame") == true
      }
      #expect(failed, "\(pull.statistics)")
      #expect(pull.statistics.pipeFailures == 1)
    }
  }

  @Test("no size limit: a frame length of Int.max waits for its bytes instead of trapping (SPSocket)")
  func unlimitedFrameLengthFirstDesign() async throws {
    try await withLoop(.epoll) { loop in
      let listener = try RawListener()
      let rep = try RepSocket.connect(
        to: listener.address, loop: loop, options: SocketOptions(maximumMessageSize: .max))
      defer { rep.abort() }
      let raw = try #require(await listener.accept(within: .seconds(5)))
      #expect(await raw.read(8, within: .seconds(5)).bytes == SPProtocolTests.repHeader)
      try raw.send(SPProtocolTests.reqHeader + spLength(UInt64(Int.max)))
      raw.shutdownWrite()
      let failed = await waitUntil(.seconds(5)) {
        if case .failed = rep.connectionState { true } else { false }
      }
      #expect(failed, "\(rep.connectionState)")
      if case .failed(let error) = rep.connectionState {
        #expect("\(error)".contains("closed mid-frame"), "\(error)")
      }
    }
  }
}

/// A user's SP socket type: SP PAIR, with its ids.
private final class PairSocket: SPSocket, SPProtocolIdentity, @unchecked Sendable {
  static let protocolID = ProtocolID.pair
  static let peerProtocolID = ProtocolID.pair
}

/// An SP socket type that forgot its ids.
private final class Anonymous: SPSocket, @unchecked Sendable {}
