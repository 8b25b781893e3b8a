import Testing
import UserProto

@testable import Examples

@Suite("Mixed poll example")
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
}
