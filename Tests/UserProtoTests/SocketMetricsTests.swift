import CoreMetrics
import MetricsTestKit
import TestSupport
import Testing

@testable import UserProto

// Each test makes its own `TestMetrics` and hands it to the sockets through
// `SocketMetrics(factory:)` (or binds it to the task with
// `withMetricsFactory`): `MetricsSystem.bootstrap` may run once per process,
// and the other suites run in parallel in this one.

/// The dimensions of a socket's metrics: the user's, then its id.
private func dimensions(_ user: [(String, String)], _ socketID: UInt64) -> [(String, String)] {
  user + [("socket", "\(socketID)")]
}

@Suite("Socket metrics", .timeLimit(.minutes(2)), .testThreads)
struct SocketMetricsTests {
  @Test("message and byte counters equal the statistics; dimensions: user's and socket id", arguments: loopBackends)
  func countersFollowStatistics(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    let serverDimensions = [("service", "echo")]
    let clientDimensions = [("service", "client")]
    let server = try Socket(
      LineEchoHandler(), loop: loop, metrics: SocketMetrics(dimensions: serverDimensions, factory: factory))
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(
      LineHandler(), loop: loop, metrics: SocketMetrics(dimensions: clientDimensions, factory: factory))
    defer { client.abort() }
    try client.dial(bound)
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    let lines = ["one", "two", "three"]
    for line in lines { #expect(try client.trySend(Array(line.utf8))) }
    for line in lines { #expect(text(receiveSoon(client)) == "echo \(line)") }

    // Every metric of the client carries its id and the user's dimension.
    let mine = dimensions(clientDimensions, client.id)
    let sent = try factory.expectCounter("userproto_socket_messages_sent", mine)
    let bytesSent = try factory.expectCounter("userproto_socket_bytes_sent", mine)
    let received = try factory.expectCounter("userproto_socket_messages_received", mine)
    let bytesReceived = try factory.expectCounter("userproto_socket_bytes_received", mine)
    let added = try factory.expectCounter("userproto_socket_pipes_added", mine)
    #expect(sent.dimensions.contains { $0 == ("socket", "\(client.id)") })
    #expect(sent.dimensions.contains { $0 == ("service", "client") })
    // A counter moves just after its statistic (once the lock is released):
    // they agree once the traffic is over.
    let stats = client.statistics
    #expect(stats.messagesSent == 3 && stats.messagesReceived == 3)
    #expect(eventually { sent.totalValue == Int64(stats.messagesSent) })
    #expect(eventually { bytesSent.totalValue == Int64(stats.bytesSent) })
    #expect(eventually { received.totalValue == Int64(stats.messagesReceived) })
    #expect(eventually { bytesReceived.totalValue == Int64(stats.bytesReceived) })
    #expect(bytesSent.totalValue == Int64("onetwothree".utf8.count))
    #expect(bytesReceived.totalValue == Int64("echo oneecho twoecho three".utf8.count))
    #expect(added.totalValue == 1)

    // The server's metrics are its own: its handler answers on the pipe and
    // neither takes sends nor delivers, so its message counters stay at 0.
    let theirs = dimensions(serverDimensions, server.id)
    #expect(try factory.expectCounter("userproto_socket_messages_received", theirs).totalValue == 0)
    #expect(try factory.expectCounter("userproto_socket_pipes_added", theirs).totalValue == 1)
    #expect(try factory.expectMeter("userproto_socket_pipes", theirs).lastValue == 1)
    // Each socket made its own series.
    #expect(factory.counters(label: "userproto_socket_messages_sent").count == 2)
  }

  @Test("pipes meter 1 then 0 as the peer goes; failures and reconnects with a restarted peer", arguments: loopBackends)
  func pipesFailuresAndReconnects(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    let policy = ReconnectPolicy(minimum: .milliseconds(20), maximum: .milliseconds(200))
    var server = try Socket(LineHandler(), loop: loop)
    let bound = try server.listen("tcp://127.0.0.1:0")
    // StrictLineHandler (SocketLoggingTests.swift) fails its pipe on a line
    // reading BAD.
    let client = try Socket(
      StrictLineHandler(), loop: loop, metrics: SocketMetrics(dimensions: [("role", "dialer")], factory: factory))
    defer { client.abort() }
    let mine = dimensions([("role", "dialer")], client.id)
    let pipes = try factory.expectMeter("userproto_socket_pipes", mine)
    let removed = try factory.expectCounter("userproto_socket_pipes_removed", mine)
    let failures = try factory.expectCounter("userproto_socket_pipe_failures", mine)
    let reconnects = try factory.expectCounter("userproto_socket_reconnects", mine)
    #expect(pipes.lastValue == 0)  // made at zero with the socket

    try client.dial(bound, reconnect: policy)
    #expect(eventually { client.pipeCount == 1 })
    #expect(eventually { pipes.lastValue == 1 })

    // The peer goes: the meter drops to 0, and the dialer re-dials (and
    // fails: nobody listens), each attempt counted.
    server.abort()
    #expect(eventually { client.pipeCount == 0 })
    #expect(eventually { pipes.lastValue == 0 })
    #expect(Array(pipes.values.prefix(3)) == [0, 1, 0])
    #expect(eventually { removed.totalValue == 1 })
    #expect(eventually { reconnects.totalValue >= 2 })

    // The peer restarts on the same port: the pipe comes back.
    server = try Socket(LineHandler(), loop: loop)
    defer { server.abort() }
    try server.listen(bound)
    #expect(eventually { client.pipeCount == 1 && server.pipeCount == 1 })
    #expect(eventually { pipes.lastValue == 1 })
    // The first peer's end may have been a reset (a failure) or an end of
    // stream: count from here.
    #expect(eventually { failures.totalValue == Int64(client.statistics.pipeFailures) })
    let failuresBefore = failures.totalValue

    // It breaks the protocol: the pipe fails, and is re-dialed.
    #expect(try server.trySend(Array("BAD".utf8)))
    #expect(eventually { failures.totalValue == failuresBefore + 1 })
    #expect(eventually { client.statistics.pipeFailures == Int(failuresBefore) + 1 })
    #expect(eventually { client.pipeCount == 1 && pipes.lastValue == 1 })
    let stats = client.statistics
    #expect(eventually { reconnects.totalValue == Int64(client.statistics.reconnects) })
    #expect(reconnects.totalValue >= Int64(stats.reconnects))
    #expect(eventually { removed.totalValue == Int64(client.statistics.pipesRemoved) })
    #expect(pipes.dimensions.contains { $0 == ("socket", "\(client.id)") })
    #expect(pipes.dimensions.contains { $0 == ("role", "dialer") })
  }

  @Test("the queue meters follow the send and receive queues", arguments: loopBackends)
  func queueMeters(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let client = try Socket(LineHandler(), loop: loop, metrics: SocketMetrics(factory: factory))
    defer { client.abort() }
    let mine = dimensions([], client.id)
    let sendQueue = try factory.expectMeter("userproto_socket_send_queue_bytes", mine)
    let receiveQueue = try factory.expectMeter("userproto_socket_receive_queue_bytes", mine)
    let cost = SocketOptions.perMessageCost

    // No pipe yet: the handler waits, and the sends stay queued.
    #expect(try client.trySend(Array("abc".utf8)))
    #expect(try client.trySend(Array("defgh".utf8)))
    #expect(eventually { sendQueue.lastValue == Double(3 + 5 + 2 * cost) })

    // A pipe comes: the sends are taken, their echoes queue for receiving.
    try client.dial(bound)
    #expect(eventually { sendQueue.lastValue == 0 })
    let echoed = "echo abc".utf8.count + "echo defgh".utf8.count + 2 * cost
    #expect(eventually { receiveQueue.lastValue == Double(echoed) })
    #expect(text(receiveSoon(client)) == "echo abc")
    #expect(text(receiveSoon(client)) == "echo defgh")
    #expect(eventually { receiveQueue.lastValue == 0 })
  }

  @Test("a socket without metrics makes none; SocketMetrics() takes the factory bound to the task")
  func noMetricsWithoutOptIn() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    // Bound to this task only (not bootstrapped): a socket that used
    // `MetricsSystem.factory` by itself would make its metrics here.
    let (server, client) = try withMetricsFactory(factory) {
      try (Socket(LineEchoHandler(), loop: loop), Socket(LineHandler(), loop: loop))
    }
    defer {
      client.abort()
      server.abort()
    }
    let bound = try server.listen("tcp://127.0.0.1:0")
    try client.dial(bound)
    #expect(try client.trySend(Array("one".utf8)))
    #expect(text(receiveSoon(client)) == "echo one")
    #expect(factory.counters.isEmpty)
    #expect(factory.meters.isEmpty)
    #expect(factory.recorders.isEmpty)
    #expect(factory.timers.isEmpty)

    // The default factory is the one bound where `SocketMetrics` is made.
    let configuration = withMetricsFactory(factory) { SocketMetrics(label: "bound") }
    let metered = try Socket(LineHandler(), loop: loop, metrics: configuration)
    defer { metered.abort() }
    #expect(try factory.expectCounter("bound_messages_sent", dimensions([], metered.id)).totalValue == 0)
    #expect(factory.meters.count == 3)
  }

  @Test("a finished socket's metrics are destroyed: the factory holds none of them")
  func destroyedOnClose() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    let socket = try Socket(LineHandler(), loop: loop, metrics: SocketMetrics(factory: factory))
    let pipes = try factory.expectMeter("userproto_socket_pipes", dimensions([], socket.id))
    #expect(factory.counters.count == 11)
    socket.abort()
    #expect(eventually { factory.counters.isEmpty && factory.meters.isEmpty })
    #expect(pipes.lastValue == 0)
  }
}
