import CUserProtoShim
import Dispatch
import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

/// Records what a transport reports, for tests that drive a transport
/// directly. Its counters are read from the test thread.
final class RecordingDelegate: TransportDelegate, Sendable {
  private let bytes = Atomic<Int>(0)
  private let ended = Atomic<Bool>(false)
  /// Bytes the transport reported as written.
  var written: Int { bytes.load(ordering: .acquiring) }
  var reachedEnd: Bool { ended.load(ordering: .acquiring) }
  func transportConnected(local: SocketAddress?, remote: SocketAddress?) {}
  func transportReceived(_ bytes: [UInt8]) {}
  func transportReachedEnd() { ended.store(true, ordering: .releasing) }
  func transportFinishedWriting() {}
  func transportWrote(_ count: Int, messages: Int) { bytes.add(count, ordering: .acquiringAndReleasing) }
  func transportFailed(_ error: IOError) {}
}

/// A connected pair of base `ProtocolSocket`s (each chunk or datagram is a
/// message, an empty message is empty wire bytes).
func plainPair(_ transport: Transport, _ loop: EventLoop, options: SocketOptions = SocketOptions()) throws
  -> (ProtocolSocket, ProtocolSocket)
{
  switch transport {
  case .memory:
    return try makeSocketPair(ProtocolSocket.self, loop: loop, options: options)
  case .tcp:
    let listener = try ProtocolListener<ProtocolSocket>(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, options: options)
    defer { try? listener.close() }
    let b = try ProtocolSocket.connect(to: listener.localAddress, loop: loop, options: options)
    var a: ProtocolSocket?
    #expect(
      eventually {
        a = try? listener.tryAccept(); return a != nil
      })
    #expect(eventually { b.connectionState == .connected })
    return (try #require(a), b)
  }
}

/// Reads and discards exactly `count` bytes (stream) or datagrams from a
/// non-blocking fd, waiting in poll(2) without a timeout.
func drain(_ fd: Int32, count: Int, datagrams: Bool) {
  var buffer = [UInt8](repeating: 0, count: 64 * 1024)
  var done = 0
  while done < count {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    _ = poll(&entry, 1, -1)
    let want = datagrams ? buffer.count : min(buffer.count, count - done)
    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, want, Int32(MSG_DONTWAIT)) }
    if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
    if n < 0 { return }
    done += datagrams ? 1 : n
  }
}

@Suite("Protocol socket queues", .testThreads)
struct SocketQueueTests {
  /// A sender that keeps the transport's queue from ever emptying (as one
  /// refilling at the low watermark does) must not keep every message it
  /// ever sent: the queue's storage stays proportional to what is unsent.
  @Test(
    "a transport's send queue keeps only unsent messages while it never empties",
    arguments: loopBackends, [false, true])
  func sendQueueStaysBounded(backend: EventLoop.BackendChoice, datagrams: Bool) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    var fds: [Int32] = [-1, -1]
    let type = datagrams ? SOCK_DGRAM : SOCK_STREAM
    try #require(
      socketpair(
        AF_UNIX, Int32(type.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
    let peer = fds[1]
    defer { close(peer) }
    let transport = StreamTransport(loop: loop, fd: fds[0], datagram: datagrams)
    let delegate = RecordingDelegate()
    let size = datagrams ? 100 : 1024
    let count = 8000
    let message = [UInt8](repeating: 7, count: size)
    try onLoop(loop) {
      transport.start(delegate)
      for _ in 0..<count { transport.write(message) }
    }
    // The peer takes all but the last 1500 messages: far more than the
    // kernel buffers hold, so the queue was never empty meanwhile.
    drain(peer, count: datagrams ? count - 1500 : (count - 1500) * size, datagrams: datagrams)
    let (stored, queued) = try onLoop(loop) { (transport.storedMessages, transport.queuedMessages) }
    #expect(queued > 0 && queued <= 1500, "\(queued) queued")
    #expect(stored <= 2 * queued + 64, "the queue stores \(stored) messages for \(queued) unsent")
    try onLoop(loop) { transport.close() }
  }

  @Test(
    "a zero-length stream message is nothing on the wire and does not hold up the shutdown",
    arguments: loopBackends, Transport.allCases)
  func emptyStreamMessage(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try plainPair(transport, loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(try a.trySend([1, 2, 3]))
    #expect(try a.trySend([]))
    try a.shutdownWrite()
    #expect(eventually { (try? b.tryReceive()) == .message([1, 2, 3]) })
    #expect(eventually { (try? b.tryReceive()) == .endOfStream }, "the shutdown reached the peer")
    #expect(eventually { a.state.withLock { $0.transmitBytes == 0 } })
  }

  @Test(
    "discardReceivedMessages drops what is queued, clears readable and resumes a paused reader",
    arguments: loopBackends, Transport.allCases)
  func discardReceived(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(receiveHighWatermark: 4 * 1024, receiveLowWatermark: 1024)
    let (a, b) = try socketPair(transport, loop, options: options)
    defer {
      a.abort()
      b.abort()
    }
    // More than the receive high watermark: b pauses reading, and the rest
    // waits in the transport (or the kernel).
    let message = [UInt8](repeating: 7, count: 1000)
    var sent = 0
    while sent < 12, try a.trySend(message) { sent += 1 }
    #expect(sent == 12)
    #expect(eventually { pollEvents(b.fileDescriptor).contains(.readable) })
    var dropped = 0
    // Each discard empties the queue; reading resumes and the rest arrives.
    #expect(
      eventually {
        dropped += b.discardReceivedMessages()
        return dropped == sent
      })
    #expect(dropped == sent)
    #expect(!pollEvents(b.fileDescriptor).contains(.readable))
    #expect(try b.tryReceive() == .wouldBlock)
    // The connection goes on: a later message is received as usual.
    #expect(try a.trySend([1, 2, 3]))
    #expect(eventually { (try? b.tryReceive()) == .message([1, 2, 3]) })
  }

  @Test("zero-length messages count against the send high watermark", arguments: loopBackends)
  func emptyMessagesFillTheSendQueue(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // Not connected yet: every message waits in the socket's send queue.
    let options = SocketOptions(sendHighWatermark: 4096, sendLowWatermark: 1024)
    let socket = try ProtocolSocket(loop: loop, options: options)
    defer { socket.abort() }
    var accepted = 0
    while accepted < 100_000, try socket.trySend([]) { accepted += 1 }
    #expect(accepted == 4096 / SocketOptions.perMessageCost)
    #expect(!pollEvents(socket.fileDescriptor).contains(.writable))
  }

  @Test("a peer flooding zero-length frames reaches the receive high watermark", arguments: loopBackends)
  func emptyFramesPauseReading(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(receiveHighWatermark: 16 * 1024, receiveLowWatermark: 4 * 1024)
    let (peer, socket) = try rawPeer(loop, options: options)
    defer {
      close(peer)
      socket.abort()
    }
    // 200,000 empty frames (800 KB): the writer blocks once the kernel
    // buffers are full and the socket has paused reading.
    let frames = 200_000
    let writer = Thread { [peer] in
      writeAll(peer, [UInt8](repeating: 0, count: 4 * frames))
      return true
    }
    #expect(eventually { socket.state.withLock { $0.readingPaused } }, "reading paused at the high watermark")
    let queued = socket.state.withLock { $0.queuedMessages }
    #expect(queued < frames / 2, "\(queued) empty messages queued")
    var got = 0
    #expect(
      eventually(60) {
        while case .message(let m) = (try? socket.tryReceive()) ?? .wouldBlock, m.isEmpty { got += 1 }
        return got == frames
      }, "got \(got) of \(frames)")
    _ = writer.join()
  }

  @Test("UDP refuses a message larger than a datagram at the call; the socket is unaffected", arguments: loopBackends)
  func oversizeDatagram(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try udpPair(loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(a.maximumSendSize == 65_507)
    #expect(throws: SocketError.messageTooLarge(size: 65_508, limit: 65_507)) {
      try a.trySend([UInt8](repeating: 1, count: 65_508))
    }
    #expect(pollEvents(a.fileDescriptor) == [.writable])
    #expect(try a.trySend([UInt8](repeating: 2, count: 65_507)))
    #expect(try a.trySend([3]))
    var got: [[UInt8]] = []
    #expect(
      eventually {
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock { got.append(m) }
        return got.count >= 2
      })
    #expect(got.map(\.count) == [65_507, 1])
    #expect(a.connectionState == .connected)
    #expect(pollEvents(a.fileDescriptor) == [.writable])
  }

  @Test("Unix datagrams: the computed limit is exactly the largest datagram the kernel sends")
  func unixDatagramLimit() throws {
    var fds: [Int32] = [-1, -1]
    try #require(
      socketpair(
        AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        == 0)
    defer {
      close(fds[0])
      close(fds[1])
    }
    let limit = Sockets.maximumDatagramSize(fds[0], family: AF_UNIX)
    let big = [UInt8](repeating: 1, count: limit + 1)
    #expect(send(fds[0], big, limit + 1, 0) == -1 && errno == EMSGSIZE, "one byte more is EMSGSIZE")
    #expect(send(fds[0], big, limit, 0) == limit, "the limit itself is sent")
  }

  @Test("a zero-length datagram is still sent", arguments: loopBackends)
  func emptyDatagram(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try udpPair(loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(try a.trySend([]))
    #expect(try a.trySend([5]))
    var got: [[UInt8]] = []
    #expect(
      eventually {
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock { got.append(m) }
        return got.count >= 2
      })
    #expect(got == [[], [5]])
  }
}

/// Two UDP sockets on loopback connected to each other.
func udpPair(_ loop: EventLoop, options: SocketOptions = SocketOptions()) throws -> (ProtocolSocket, ProtocolSocket) {
  let (fa, addressA) = try boundUDP()
  let (fb, addressB) = try boundUDP()
  // Free the ports for the sockets under test (nothing else binds them in
  // between on loopback in practice; a clash fails the test clearly).
  close(fa)
  close(fb)
  let a = try ProtocolSocket.udp(local: addressA, remote: addressB, loop: loop, options: options)
  let b = try ProtocolSocket.udp(local: addressB, remote: addressA, loop: loop, options: options)
  #expect(eventually { a.connectionState == .connected && b.connectionState == .connected })
  return (a, b)
}

private func boundUDP() throws -> (Int32, SocketAddress) {
  let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  try #require(fd >= 0)
  let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
  try #require(any.withSockaddr { bind(fd, $0, $1) } == 0)
  return (fd, try Sockets.localAddress(fd))
}
