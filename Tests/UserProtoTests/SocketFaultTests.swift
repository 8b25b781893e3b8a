import CUserProtoShim
import Glibc
import TestSupport
import Testing

@testable import UserProto

/// A raw kernel TCP peer connected to a FramedSocket accepted by a listener.
func rawPeer(_ loop: EventLoop, options: SocketOptions = SocketOptions()) throws -> (Int32, FramedSocket) {
  let listener = try ProtocolListener<FramedSocket>(
    on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, options: options)
  defer { try? listener.close() }
  let peer = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  try #require(listener.localAddress.withSockaddr { connect(peer, $0, $1) } == 0)
  var accepted: FramedSocket?
  #expect(
    eventually {
      accepted = try? listener.tryAccept(); return accepted != nil
    })
  return (peer, try #require(accepted))
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
  var offset = 0
  while offset < bytes.count {
    let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
    if n <= 0 { return }
    offset += n
  }
}

@Suite("Protocol socket faults", .testThreads)
struct SocketFaultTests {
  /// The socket shows the error, reports it once, then end-of-stream; and a
  /// second connection on the same loop is unaffected.
  static func expectFailed(_ socket: FramedSocket, with error: SocketError, loop: EventLoop) throws {
    #expect(eventually { pollEvents(socket.fileDescriptor).contains(.error) }, "error readiness")
    #expect(pollEvents(socket.fileDescriptor) == [.readable, .writable, .error, .hangup])
    #expect(throws: error) { try socket.tryReceive() }
    #expect(pollEvents(socket.fileDescriptor) == [.readable, .writable, .hangup], "the error was received")
    #expect(try socket.tryReceive() == .endOfStream)
    #expect(throws: error) { try socket.trySend([1]) }
    // Nothing else is affected.
    let (a, b) = try tcpPair(loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(try a.trySend([42]))
    #expect(eventually { (try? b.tryReceive()) == .message([42]) })
  }

  @Test("an oversize message to send is refused and changes nothing", arguments: loopBackends)
  func oversizeSend(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop, options: SocketOptions(maximumMessageSize: 1000))
    defer {
      a.abort()
      b.abort()
    }
    #expect(throws: SocketError.messageTooLarge(size: 1001, limit: 1000)) {
      try a.trySend([UInt8](repeating: 0, count: 1001))
    }
    #expect(pollEvents(a.fileDescriptor) == [.writable])
    #expect(try a.trySend([UInt8](repeating: 0, count: 1000)))
    #expect(
      eventually {
        if case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock { return m.count == 1000 }; return false
      })
  }

  @Test("an oversize frame from the peer fails that connection only", arguments: loopBackends)
  func oversizeFrame(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (peer, socket) = try rawPeer(loop, options: SocketOptions(maximumMessageSize: 1 << 20))
    defer {
      close(peer)
      socket.abort()
    }
    writeAll(peer, [0x00, 0x20, 0x00, 0x00])  // a 2 MiB length, no payload needed to reject it
    try SocketFaultTests.expectFailed(socket, with: .messageTooLarge(size: 2 << 20, limit: 1 << 20), loop: loop)
    // The connection was closed: the raw peer reads end-of-stream.
    var byte: UInt8 = 0
    var entry = pollfd(fd: peer, events: Int16(POLLIN), revents: 0)
    _ = poll(&entry, 1, 5000)
    #expect(recv(peer, &byte, 1, 0) <= 0)
  }

  @Test("a malformed frame fails that connection only", arguments: loopBackends)
  func malformedFrame(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (peer, socket) = try rawPeer(loop)
    defer {
      close(peer)
      socket.abort()
    }
    writeAll(peer, frame([1, 2, 3]) + [0x80, 0, 0, 1])
    #expect(eventually { (try? socket.tryReceive()) == .message([1, 2, 3]) }, "the good frame before it arrives")
    try SocketFaultTests.expectFailed(socket, with: .protocolViolation("length with the top bit set"), loop: loop)
  }

  @Test("a peer that resets the connection leaves an error", arguments: loopBackends)
  func peerReset(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (peer, socket) = try rawPeer(loop)
    defer { socket.abort() }
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    close(peer)  // RST
    try SocketFaultTests.expectFailed(socket, with: .peerVanished, loop: loop)
  }

  @Test("a peer that vanishes mid-frame leaves an error", arguments: loopBackends)
  func peerVanishes(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (peer, socket) = try rawPeer(loop)
    defer { socket.abort() }
    writeAll(peer, [0, 0, 0, 10, 1, 2])  // 2 of 10 payload bytes
    close(peer)
    try SocketFaultTests.expectFailed(socket, with: .peerVanished, loop: loop)
  }

  @Test("a peer that finishes cleanly is end-of-stream, not an error", arguments: loopBackends)
  func peerFinishes(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (peer, socket) = try rawPeer(loop)
    defer { socket.abort() }
    writeAll(peer, frame([7]))
    shutdown(peer, Int32(SHUT_WR))
    #expect(eventually { (try? socket.tryReceive()) == .message([7]) })
    #expect(eventually { pollEvents(socket.fileDescriptor) == [.readable, .writable] })
    #expect(try socket.tryReceive() == .endOfStream)
    close(peer)
  }

  @Test("use after close and after abort is a clear error", arguments: loopBackends)
  func useAfterClose(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try tcpPair(loop)
    try a.close()
    b.abort()
    for socket in [a, b] {
      #expect(throws: SocketError.closed) { try socket.trySend([1]) }
      #expect(throws: SocketError.closed) { try socket.tryReceive() }
      #expect(throws: SocketError.closed) { try socket.shutdownWrite() }
      #expect(throws: SocketError.closed) { try socket.close() }
      #expect(socket.mask.isClosed)
    }
  }

  @Test("connecting to a closed port fails with a clear error", arguments: loopBackends)
  func connectRefused(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (fd, address) = try tcpListener()
    close(fd)  // nobody listens there now
    let socket = try FramedSocket.connect(to: address, loop: loop)
    defer { socket.abort() }
    #expect(eventually { pollEvents(socket.fileDescriptor).contains(.error) })
    #expect(throws: SocketError.transport(IOError("connect", ECONNREFUSED))) { try socket.tryReceive() }
  }

  // 10,000 cycles, or USERPROTO_LEAK_CYCLES: the QEMU guests of
  // scripts/test.sh run 2,000 (under TCG 10,000 took 146 s of a 180 s
  // boot). Any count over the default RLIMIT_NOFILE of 1,024 still turns
  // one leaked fd per cycle into EMFILE, and before == after catches one.
  @Test("connect and close cycles (10,000 unless USERPROTO_LEAK_CYCLES says) leak no fd", arguments: loopBackends)
  func noLeaks(backend: EventLoop.BackendChoice) throws {
    let cycles = getenv("USERPROTO_LEAK_CYCLES").flatMap { Int(String(cString: $0)) } ?? 10_000
    try #require(cycles > 1_024, "USERPROTO_LEAK_CYCLES must be over 1,024 (is \(cycles))")
    let (status, values) = try runCheck(["socket-leak", backend == .ioUring ? "io_uring" : "epoll", "\(cycles)"])
    #expect(status == 0, "\(values)")
    #expect(values["before"] != nil && values["before"] == values["after"], "\(values)")
  }
}
