import Glibc
import Logging
import ServiceLifecycle
import Testing
import UserProtoLifecycle

@testable import UserProto

/// A logger that drops everything, for the service groups under test.
private let quiet = Logger(label: "test.service-group") { _ in SwiftLogNoOpLogHandler() }

@Suite("Sockets, loops and groups as ServiceLifecycle services", .timeLimit(.minutes(2)), .testThreads)
struct SocketServiceTests {
  @Test("graceful shutdown of a ServiceGroup: the socket's queued output arrives in full, then its loop stops")
  func gracefulShutdownFlushes() async throws {
    // The peer runs on a loop outside the group, so it keeps reading after
    // the group's loop has stopped.
    let peerLoop = try makeLoop(.epoll)
    defer { peerLoop.shutdownAndWait() }
    let server = try Socket(LineHandler(), loop: peerLoop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")

    let loop = try makeLoop(.epoll)
    let client = try Socket(LineHandler(), loop: loop)
    try client.dial(bound)
    #expect(eventually { client.pipeCount == 1 })
    let group = ServiceGroup(
      configuration: ServiceGroupConfiguration(
        services: [.init(service: loop), .init(service: client)], logger: quiet))
    async let running: Void = group.run()
    // Queued faster than the loop writes, so some is still queued when the
    // shutdown starts.
    let lines = (0..<2_000).map { "line \($0) " + String(repeating: "x", count: 200) }
    for line in lines { try await client.send(Array(line.utf8)) }
    await group.triggerGracefulShutdown()
    try await running

    #expect(client.isClosed, "graceful shutdown closed the socket")
    #expect(loop.isShutDown, "then stopped its loop (services stop in reverse order)")
    var received: [String] = []
    #expect(
      eventually {
        while case .message(let m)? = try? server.tryReceive() { received.append(String(decoding: m, as: UTF8.self)) }
        return received.count == lines.count
      })
    #expect(received == lines, "every send accepted before the shutdown arrives, in order")
    #expect(eventually { server.pipeCount == 0 }, "the peer saw the pipe end")
  }

  @Test("the close linger bounds a graceful shutdown: a peer that stops reading cannot hold it up")
  func lingerBoundsShutdown() async throws {
    let peerLoop = try makeLoop(.epoll)
    defer { peerLoop.shutdownAndWait() }
    // The peer reads up to its 4 KiB receive watermark, then never again.
    let server = try Socket(
      LineHandler(), loop: peerLoop, options: SocketOptions(receiveHighWatermark: 4096, receiveLowWatermark: 1024))
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")

    let loop = try makeLoop(.epoll)
    let client = try Socket(
      LineHandler(), loop: loop,
      options: SocketOptions(sendHighWatermark: 1 << 20, sendLowWatermark: 1 << 19, closeLinger: .milliseconds(200)))
    try client.dial(bound)
    #expect(eventually { client.pipeCount == 1 })
    // Fill the kernel's buffers and the socket's queue until a send would
    // block: the output can no longer drain by itself.
    let chunk = [UInt8](repeating: 0x41, count: 32 * 1024)
    let deadline = EventLoop.now() + 20_000_000_000
    var blocked = false
    while !blocked && EventLoop.now() < deadline {
      blocked = try !client.trySend(chunk)
      if !blocked { usleep(100) }
    }
    #expect(blocked, "the send queue filled: the peer is not reading")

    let group = ServiceGroup(
      configuration: ServiceGroupConfiguration(
        services: [.init(service: loop), .init(service: client)], logger: quiet))
    async let running: Void = group.run()
    await group.triggerGracefulShutdown()
    try await running
    #expect(client.isClosed)
    #expect(loop.isShutDown, "the shutdown ended although the output could not drain")
  }

  @Test("cancelling a socket's run() aborts the socket; run() returns")
  func cancellationAborts() async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let socket = try Socket(LineHandler(), loop: loop)
    try socket.dial("tcp://127.0.0.1:1")  // refused and re-dialed: the socket stays busy
    let running = Task { try await socket.run() }
    #expect(eventually { !socket.isClosed })
    running.cancel()
    try await running.value
    #expect(socket.isClosed)
    #expect(try onLoop(loop) { socket.core.isFinished }, "run() returned once the socket had finished")
  }

  @Test("a socket closed by the application ends its run()")
  func closedSocketEndsRun() async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let socket = try Socket(LineHandler(), loop: loop)
    let running = Task { try await socket.run() }
    try socket.close()
    try await running.value
    #expect(try onLoop(loop) { socket.core.isFinished })
  }

  @Test("an EventLoopGroup in a ServiceGroup: graceful shutdown stops every loop")
  func groupStops() async throws {
    let loops = try EventLoopGroup(count: 2)
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [.init(service: loops)], logger: quiet))
    async let running: Void = group.run()
    #expect(!loops.isShutDown)
    await group.triggerGracefulShutdown()
    try await running
    #expect(loops.isShutDown)
  }

  @Test("a negative close linger is no linger")
  func lingerClamped() {
    #expect(SocketOptions(closeLinger: .seconds(-1)).closeLinger == .zero)
    #expect(SocketOptions().closeLinger == .seconds(5))
  }
}

/// Weak references to a socket's loop-side objects, taken and read on its
/// loop (the objects are loop-confined; the box only carries the references).
private final class LoopSideRefs: @unchecked Sendable {
  weak var pipe: SocketPipe?
  weak var dialer: Dialer?
  var released: Bool { pipe == nil && dialer == nil }
}

@Suite("Nothing of a finished socket stays alive", .timeLimit(.minutes(2)), .testThreads)
struct SocketReleaseTests {
  enum Ending: String, CaseIterable { case close, abort, drop }

  @Test(
    "a dialed pipe and its dialer are freed however the socket ends (the soak's leak: abort kept both)",
    arguments: Ending.allCases)
  func dialedPipeReleased(ending: Ending) async throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let refs = LoopSideRefs()
    var socket: Socket<LineHandler>? = try Socket(LineHandler(), loop: loop)
    try socket!.dial(bound)
    #expect(eventually { socket!.pipeCount == 1 })
    let core = socket!.core
    try onLoop(loop) {
      refs.pipe = core.allPipes.values.first
      refs.dialer = core.dialers.first
    }
    #expect(try onLoop(loop) { !refs.released }, "the references were taken")
    switch ending {
    case .close: await socket!.closeAndWait()
    case .abort: await socket!.abortAndWait()
    case .drop: socket = nil  // deinit aborts
    }
    socket = nil
    #expect(eventually { (try? onLoop(loop) { refs.released }) == true }, "no cycle keeps the pipe or dialer alive")
  }
}
