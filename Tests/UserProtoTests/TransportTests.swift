import Glibc
import TestSupport
import Testing

@testable import UserProto

/// The transports other than TCP, through `Socket<Handler>`: Unix-domain
/// streams (`ipc://`) and UDP datagrams (`udp://`).
@Suite("Transports", .timeLimit(.minutes(2)), .testThreads)
struct TransportTests {
  @Test("ipc://: listen, dial, messages both ways, half-close with sends after it", arguments: loopBackends)
  func unixStream(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let path = "/tmp/userproto-test-\(getpid())-\(backend == .ioUring ? "u" : "e").sock"
    unlink(path)
    defer { unlink(path) }
    let server = try Socket(HalfCloseFramer(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("ipc://\(path)")
    #expect(bound == .ipc(try SocketAddress(unixPath: path)))
    let client = try Socket(HalfCloseFramer(), loop: loop)
    defer { client.abort() }
    try client.dial(bound)
    #expect(eventually { server.pipeCount == 1 && client.pipeCount == 1 })
    // Above the stream receive buffers: the frame arrives in many pieces.
    let big = [UInt8](repeating: 7, count: 200_000)
    #expect(try client.trySend([1, 2, 3]))
    #expect(try client.trySend(big))
    #expect(receiveSoon(server) == [1, 2, 3])
    #expect(receiveSoon(server) == big)
    #expect(try server.trySend([9]))
    #expect(receiveSoon(client) == [9])
    // The client's write side shuts: the server's application sees the end
    // of the stream, and the server can still send on the same pipe.
    try client.shutdownWrite()
    #expect(eventually { (try? server.tryReceive()) == .endOfStream })
    #expect(eventually { pollEvents(server.fileDescriptor).isSuperset(of: [.readable, .writable]) })
    #expect(try server.trySend([10, 11]))
    #expect(receiveSoon(client) == [10, 11])
    // On the same pipe: neither side saw a pipe go or a new one come.
    #expect(server.statistics.pipesAdded == 1 && server.statistics.pipesRemoved == 0, "\(server.statistics)")
    #expect(client.statistics.pipesAdded == 1 && client.statistics.pipesRemoved == 0, "\(client.statistics)")
  }

  @Test("udp://: each message is one datagram, both ways, empty and 40,000-byte ones included", arguments: loopBackends)
  func udp(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    // The default handler: each datagram is one message, each message one datagram.
    let a = try Socket(DatagramClient(), loop: loop)
    defer { a.abort() }
    let url = try a.listen("udp://127.0.0.1:0")
    let b = try Socket(DatagramClient(), loop: loop)
    defer { b.abort() }
    try b.dial(url)
    #expect(eventually { b.pipeCount == 1 })
    // Datagrams keep their boundaries, including large ones (above the
    // stream receive buffers' 16 KiB) and empty ones.
    let messages: [[UInt8]] = [[1], [2, 3], [UInt8](repeating: 4, count: 40_000), []]
    for m in messages { #expect(try b.trySend(m)) }
    var got: [[UInt8]] = []
    #expect(
      eventually {
        while case .message(let m) = (try? a.tryReceive()) ?? .wouldBlock { got.append(m) }
        return got.count >= 4
      })
    // Compare sizes and contents without printing 40 KB on failure.
    #expect(got.map(\.count) == [1, 2, 40_000, 0])
    #expect(got == messages)
    // The listener made one pipe for the one peer address; the answer goes back on it.
    #expect(a.pipeCount == 1)
    #expect(try a.trySend([42]))
    #expect(receiveSoon(b) == [42])
    #expect(pollEvents(b.fileDescriptor) == [.writable])
  }
}

/// 4-byte big-endian length-prefixed messages to its first pipe. When the
/// peer finishes sending, the application's stream ends but the pipe stays
/// for sending (a half-close).
private final class HalfCloseFramer: SocketHandler {
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let length = input.peekBigEndian(UInt32.self), input.readableBytes >= 4 + Int(length) {
      input.moveReaderIndex(forwardBy: 4)
      try context.deliver(input.readBytes(Int(length)) ?? [])
    }
  }

  func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    if !input.isEmpty { throw .protocolViolation("the peer ended mid-frame") }
    try context.finishReceiving()
  }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    guard let pipe = context.pipes.first(where: { $0.isWritable }) else { return .wait }
    let n = UInt32(message.count)
    try pipe.write([UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + message)
    return .taken
  }
}
