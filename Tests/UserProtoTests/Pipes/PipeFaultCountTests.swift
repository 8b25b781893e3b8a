import CUserProtoShim
import Glibc
import MetricsTestKit
import TestSupport
import Testing

@testable import UserProto

// What the fault scenarios (scripts/faults.sh) rely on the socket layer for:
// UDP drops in the socket's statistics, a pipe's queued writes readable when
// it goes, and TCP keep-alive on the socket's connections.

@Suite("Socket fault counters and TCP keep-alive", .timeLimit(.minutes(2)), .testThreads)
struct PipeFaultCountTests {
  @Test("a UDP listener's drops are counted in the socket's statistics and its datagram drops metric")
  func datagramDrops() throws {
    let loop = try makeLoop(.epoll)
    defer { loop.shutdownAndWait() }
    let factory = TestMetrics()
    // The application never receives: past the watermark, reading pauses
    // and the peer's datagrams are dropped.
    let small = SocketOptions(receiveHighWatermark: 2048, receiveLowWatermark: 512)
    let server = try Socket(
      DatagramClient(), loop: loop, options: small, metrics: SocketMetrics(factory: factory))
    defer { server.abort() }
    let url = try server.listen("udp://127.0.0.1:0")
    let client = try Socket(DatagramClient(), loop: loop)
    defer { client.abort() }
    try client.dial(url)
    #expect(eventually { client.pipeCount == 1 })
    let total = 100
    for i in 0..<total { #expect(try client.trySend([UInt8](repeating: UInt8(i), count: 50))) }
    #expect(
      eventually {
        let s = server.statistics
        return s.messagesReceived + s.datagramDrops == total
      }, "\(server.statistics)")
    let statistics = server.statistics
    #expect(statistics.datagramDrops > 0 && statistics.messagesReceived > 0, "\(statistics)")
    let drops = try factory.expectCounter(
      "userproto_socket_drops", [("socket", "\(server.id)"), ("cause", "datagram")])
    #expect(eventually { drops.totalValue == Int64(statistics.datagramDrops) })
  }

  @Test("a pipe counts its writes, and those not yet handed to the kernel", arguments: loopBackends)
  func queuedOutputMessages(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(LineEchoHandler(), loop: loop)
    defer { server.abort() }
    let client = try Socket(LineHandler(), loop: loop)
    defer { client.abort() }
    try client.dial(try server.listen("tcp://127.0.0.1:0"))
    #expect(eventually { client.pipeCount == 1 })
    for line in ["one", "two", "three"] { #expect(try client.trySend(Array(line.utf8))) }
    for line in ["one", "two", "three"] { #expect(text(receiveSoon(client)) == "echo \(line)") }
    let counts = try client.withHandlerAndWait { _, context in
      (context.pipes.first?.writtenMessages, context.pipes.first?.queuedOutputMessages)
    }
    #expect(counts.0 == 3 && counts.1 == 0, "\(counts)")
  }

  @Test("TCP keep-alive: the option arms the keepalive timer on accepted and dialed pipes", arguments: loopBackends)
  func keepAliveApplied(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(tcpKeepAlive: TCPKeepAlive(idle: .seconds(40), interval: .seconds(5), probes: 2))

    // Accepted: a plain client connects to listeners with and without it.
    for keepAlive in [true, false] {
      let server = try Socket(LineEchoHandler(), loop: loop, options: keepAlive ? options : SocketOptions())
      defer { server.abort() }
      guard case .tcp(let bound) = try server.listen("tcp://127.0.0.1:0"), let serverPort = bound.port else {
        Issue.record("no TCP port")
        return
      }
      let fd = try connectedClient(try SocketAddress(ipv4: "127.0.0.1", port: serverPort))
      defer { close(fd) }
      #expect(eventually { server.pipeCount == 1 })
      let clientPort = try #require(port(of: fd, getsockname))
      if keepAlive {
        // The keepalive timer (2) fires after the idle time (40 s, in
        // clock ticks of 1/100 s), counting down.
        var timer: (kind: Int, ticks: Int)?
        let armed = eventually(5) {
          timer = tcpTimer(local: serverPort, remote: clientPort)
          return timer?.kind == 2
        }
        #expect(armed, "\(String(describing: timer))")
        #expect((3000...4000).contains(timer?.ticks ?? 0), "\(String(describing: timer))")
      } else {
        #expect(tcpTimer(local: serverPort, remote: clientPort)?.kind == 0)
      }
    }

    // Dialed: the socket dials a plain listener.
    let (listener, address) = try tcpListener()
    defer { close(listener) }
    let listenerPort = try #require(address.port)
    let dialer = try Socket(LineHandler(), loop: loop, options: options)
    defer { dialer.abort() }
    try dialer.dial("tcp://127.0.0.1:\(listenerPort)")
    var accepted: Int32 = -1
    let connected = eventually {
      accepted = up_accept(listener)  // close-on-exec
      return accepted >= 0
    }
    #expect(connected)
    defer { if accepted >= 0 { close(accepted) } }
    let dialerPort = try #require(port(of: accepted, getpeername))
    var timer: (kind: Int, ticks: Int)?
    let armed = eventually(5) {
      timer = tcpTimer(local: dialerPort, remote: listenerPort)
      return timer?.kind == 2
    }
    #expect(armed, "\(String(describing: timer))")
  }

  @Test("TCPKeepAlive takes whole seconds within the kernel's ranges; the detection time is the one applied")
  func keepAliveRounding() {
    let rounded = TCPKeepAlive(idle: .milliseconds(1500), interval: .zero, probes: 0)
    #expect(rounded.idleSeconds == 2 && rounded.intervalSeconds == 1 && rounded.probeCount == 1)
    #expect(rounded.detectionTime == .seconds(3))
    #expect(TCPKeepAlive().detectionTime == .seconds(16))
    let huge = TCPKeepAlive(idle: .seconds(100_000), interval: .seconds(1), probes: 1000)
    #expect(huge.idleSeconds == 32_767 && huge.probeCount == 127)
  }
}

/// A blocking IPv4 TCP client connected to `address` (close-on-exec).
private func connectedClient(_ address: SocketAddress) throws -> Int32 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  try #require(fd >= 0)
  guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else {
    close(fd)
    throw SocketError.transport(IOError("connect", errno))
  }
  return fd
}

/// The port of `fd`'s own address (`getsockname`) or its peer's (`getpeername`).
private func port(
  of fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
) -> UInt16? {
  var storage = sockaddr_storage()
  var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
  let rc = withUnsafeMutablePointer(to: &storage) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) }
  }
  guard rc == 0 else { return nil }
  let address = withUnsafeBytes(of: &storage) {
    SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)]))
  }
  return address.port
}

/// The timer columns of /proc/net/tcp (`tr`, and `tm->when` in clock ticks)
/// for the IPv4 TCP socket from port `local` to port `remote`.
private func tcpTimer(local: UInt16, remote: UInt16) -> (kind: Int, ticks: Int)? {
  guard let file = fopen("/proc/net/tcp", "re") else { return nil }
  defer { fclose(file) }
  var line: UnsafeMutablePointer<CChar>? = nil
  var capacity = 0
  defer { free(line) }
  while getline(&line, &capacity, file) > 0, let line {
    let fields = String(cString: line).split(separator: " ")
    guard fields.count > 5, fields[0] != "sl" else { continue }
    let localPort = fields[1].split(separator: ":").last.flatMap { UInt16($0, radix: 16) }
    let remotePort = fields[2].split(separator: ":").last.flatMap { UInt16($0, radix: 16) }
    guard localPort == local, remotePort == remote else { continue }
    let timer = fields[5].split(separator: ":")
    guard timer.count == 2, let kind = Int(timer[0], radix: 16), let ticks = Int(timer[1], radix: 16) else {
      return nil
    }
    return (kind, ticks)
  }
  return nil
}
