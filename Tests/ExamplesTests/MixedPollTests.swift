import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

@testable import Examples

@Suite("Mixed poll example", .testThreads)
struct MixedPollTests {
  @Test(
    "one poll set and one app-thread epoll set serve kernel TCP and UserProto sockets by readiness alone",
    arguments: [EventLoop.BackendChoice.ioUring, .epoll], [false, true])
  func mixed(backend: EventLoop.BackendChoice, useEpoll: Bool) throws {
    let loop = try EventLoop(configuration: .init(backend: backend))
    defer { loop.shutdownAndWait() }
    let report = try MixedPoll.run(loop: loop, messages: 300, useEpoll: useEpoll)
    #expect(report.kernelEchoes == 300)
    #expect(report.protocolEchoes == 300)
    // Each message wakes the app once per socket; no spurious wake-ups from
    // the UserProto fd (a query never leaves it falsely readable).
    #expect(report.wakeups <= 600 + 2, "\(report)")
  }

  /// A kernel socket whose peer has gone shows POLLIN (end of file) for
  /// good, and so does a protocol socket that failed (with POLLERR and
  /// POLLHUP): the app must drop them from its set, not wake up for them
  /// again and again. A protocol socket whose only peer went is not ended:
  /// it keeps listening, and its fd shows nothing, so it wakes nobody.
  @Test(
    "sockets that ended leave the app's set instead of waking it in a loop; a socket whose peer went stays quiet",
    arguments: [false, true])
  func peersGone(useEpoll: Bool) throws {
    let loop = try EventLoop(configuration: .init(backend: .epoll))
    defer { loop.shutdownAndWait() }
    let (kernelServer, kernelClient) = try MixedPoll.kernelTCPPair()
    defer { close(kernelServer) }
    let server = try Socket(FramedHandler(), loop: loop)
    defer { server.abort() }
    let client = try Socket(FramedHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(try server.listen("tcp://127.0.0.1:0"))
    #expect(eventually { server.pipeCount == 1 })
    let shared = MixedPoll.Shared(MixedPoll.Report(mechanism: "test"))
    let app = AppThread { MixedPoll.serve(kernelServer, server, shared, useEpoll: useEpoll) }
    close(kernelClient)
    client.abort()
    // The kernel socket reads end of file and leaves; the protocol socket
    // loses its pipe and stays in the set, showing nothing.
    #expect(eventually { shared.report.withLock { $0.dropped } == 1 && server.pipeCount == 0 })
    #expect(server.readiness.isDisjoint(with: [.readable, .error, .hangup]))
    // A failure (what a handler does on a fatal error) ends it for good.
    try server.withHandlerAndWait { _, context in try context.fail(.peerVanished) }
    #expect(eventually { shared.report.withLock { $0.dropped } == 2 })
    let (dropped, wakeups) = shared.report.withLock { ($0.dropped, $0.wakeups) }
    shared.stop.store(true, ordering: .releasing)
    app.join()
    #expect(dropped == 2, "both sockets left the set")
    #expect(wakeups <= 4, "about one wake-up per socket that ended, not a busy loop: \(wakeups)")
  }

  @Test("the kernel TCP pair is close-on-exec on both ends")
  func kernelPairCloseOnExec() throws {
    let (server, client) = try MixedPoll.kernelTCPPair()
    defer {
      close(server)
      close(client)
    }
    #expect(fcntl(server, F_GETFD) & FD_CLOEXEC != 0)
    #expect(fcntl(client, F_GETFD) & FD_CLOEXEC != 0)
  }
}

/// Waits until `condition` holds, up to 10 s.
private func eventually(_ condition: () -> Bool) -> Bool {
  let deadline = EventLoop.now() + 10_000_000_000
  while !condition() {
    if EventLoop.now() > deadline { return false }
    usleep(1000)
  }
  return true
}
