import Glibc
import Synchronization
import TestSupport
import Testing

@testable import UserProto

/// The listeners a `Socket<Handler>` starts: how they end with the socket.
@Suite("Socket listeners", .timeLimit(.minutes(2)), .testThreads)
struct SocketListenerTests {
  enum Ending: String, CaseIterable, Sendable { case close, abort, drop }

  /// True when a socket of `type` can bind `address` now (its port is free).
  func canBind(_ address: SocketAddress, type: Int32) -> Bool {
    let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return address.withSockaddr { bind(fd, $0, $1) } == 0
  }

  @Test(
    "a socket's TCP and UDP listeners release their ports and operations however the socket ends",
    arguments: loopBackends, Ending.allCases)
  func listenersReleased(backend: EventLoop.BackendChoice, ending: Ending) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    var socket: Socket<DatagramClient>? = try Socket(DatagramClient(), loop: loop)
    guard case .tcp(let tcpAddress) = try socket!.listen("tcp://127.0.0.1:0"),
      case .udp(let udpAddress) = try socket!.listen("udp://127.0.0.1:0")
    else {
      Issue.record("listen returned another scheme")
      return
    }
    _ = socket!.fileDescriptor
    #expect(!canBind(tcpAddress, type: Int32(SOCK_STREAM.rawValue)), "the TCP port is taken while listening")
    #expect(!canBind(udpAddress, type: Int32(SOCK_DGRAM.rawValue)), "the UDP port is taken while bound")
    switch ending {
    case .close: try socket!.close()
    case .abort: socket!.abort()
    case .drop: break  // deinit aborts
    }
    socket = nil
    #expect(eventually { canBind(tcpAddress, type: Int32(SOCK_STREAM.rawValue)) }, "TCP port released")
    #expect(eventually { canBind(udpAddress, type: Int32(SOCK_DGRAM.rawValue)) }, "UDP port released")
    #expect(eventually { (try? onLoop(loop) { loop.operationsInFlight }) == 0 }, "the accept and receive ended")
  }

  @Test(
    "connections that arrive while the socket closes are closed, not stranded: each client reads the end",
    arguments: loopBackends)
  func connectionsDuringClose(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let server = try Socket(DatagramClient(), loop: loop)
    guard case .tcp(let address) = try server.listen("tcp://127.0.0.1:0") else {
      Issue.record("listen returned another scheme")
      return
    }
    // Connected by the kernel (in the backlog or accepted) around the close.
    var clients: [Int32] = []
    defer { for fd in clients { close(fd) } }
    for i in 0..<8 {
      let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      try #require(fd >= 0)
      if address.withSockaddr({ connect(fd, $0, $1) }) != 0 {
        // Only once the abort has closed the listener may a connect be refused.
        #expect(i > 3 && errno == ECONNREFUSED, "connect \(i): errno \(errno)")
        close(fd)
        continue
      }
      clients.append(fd)
      if i == 3 { server.abort() }
    }
    // Every client sees its connection end (EOF or a reset), none hangs.
    for fd in clients {
      var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      #expect(eventually { poll(&entry, 1, 0) == 1 }, "client \(fd) never saw its connection end")
      var byte: UInt8 = 0
      #expect(recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0, "client \(fd) got data")
    }
    #expect(eventually { (try? onLoop(loop) { loop.operationsInFlight }) == 0 }, "nothing left in flight")
    #expect(server.pipeCount == 0)
  }
}
