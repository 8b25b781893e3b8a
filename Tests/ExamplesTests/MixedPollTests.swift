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

  /// Peers that go away leave POLLHUP (and POLLIN) on both fds for good: the
  /// app must drop them from its set, not wake up for them again and again.
  @Test("sockets whose peers have gone leave the app's set instead of waking it in a loop", arguments: [false, true])
  func peersGone(useEpoll: Bool) throws {
    let loop = try EventLoop(configuration: .init(backend: .epoll))
    defer { loop.shutdownAndWait() }
    let (kernelServer, kernelClient) = try MixedPoll.kernelTCPPair()
    defer { close(kernelServer) }
    let (server, client) = try makeSocketPair(LengthPrefixedSocket.self, loop: loop)
    defer { server.abort() }
    let shared = MixedPoll.Shared(MixedPoll.Report(mechanism: "test"))
    let app = AppThread { MixedPoll.serve(kernelServer, server, shared, useEpoll: useEpoll) }
    close(kernelClient)
    client.abort()
    var dropped = 0
    let deadline = EventLoop.now() + 10_000_000_000
    while dropped < 2 && EventLoop.now() < deadline {
      usleep(1000)
      dropped = shared.report.withLock { $0.dropped }
    }
    let wakeups = shared.report.withLock { $0.wakeups }
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
