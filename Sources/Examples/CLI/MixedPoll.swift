import ArgumentParser
import CUserProtoShim  // epoll, which SwiftGlibc does not export
import Dispatch
import Glibc
import Synchronization
import UserProto

/// An application that polls UserProto sockets next to plain kernel TCP
/// sockets, in one poll(2) set or in one epoll set on its own thread (not the
/// event loop), and reacts to each fd by its readiness alone.
///
/// The "app" echoes: whatever arrives on its server-side sockets, kernel or
/// UserProto, it sends back. Clients on the side check the echoes.
enum MixedPoll {
  struct Report: Sendable, CustomStringConvertible {
    var mechanism: String
    var kernelEchoes = 0
    var protocolEchoes = 0
    var wakeups = 0
    var description: String {
      "\(mechanism): \(kernelEchoes) kernel TCP echoes and \(protocolEchoes) UserProto echoes in \(wakeups) wake-ups"
    }
  }

  /// Runs the app with `messages` messages per connection.
  static func run(loop: EventLoop, messages: Int, useEpoll: Bool) throws -> Report {
    // Plain kernel TCP: a listener, one client, one accepted server socket.
    let (kernelServer, kernelClient) = try kernelTCPPair()
    defer {
      close(kernelServer)
      close(kernelClient)
    }
    // UserProto: a listener and one connection of a length-framed protocol.
    let listener = try ProtocolListener<LengthPrefixedSocket>(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    defer { try? listener.close() }
    let protocolClient = try LengthPrefixedSocket.connect(to: listener.localAddress, loop: loop)
    defer { protocolClient.abort() }
    var protocolServer: LengthPrefixedSocket?
    let acceptDeadline = EventLoop.now() + 5_000_000_000
    while protocolServer == nil && EventLoop.now() < acceptDeadline {
      var entry = pollfd(fd: listener.fileDescriptor, events: Int16(POLLIN), revents: 0)
      _ = poll(&entry, 1, 100)  // the listener's fd is readable when a connection waits
      protocolServer = try listener.tryAccept()
    }
    guard let protocolServer else { throw ValidationError("no connection accepted") }
    defer { protocolServer.abort() }

    // The app runs on its own thread, the way an application's event loop
    // would, and knows nothing about UserProto's loop.
    let shared = Shared(Report(mechanism: useEpoll ? "epoll on an app thread" : "poll(2) on an app thread"))
    let app = AppThread {
      if useEpoll {
        serveWithEpoll(kernelServer, protocolServer, shared)
      } else {
        serveWithPoll(kernelServer, protocolServer, shared)
      }
    }

    // Clients: send and check every echo.
    for i in 0..<messages {
      let payload = Array("message \(i)".utf8)
      guard send(kernelClient, payload, payload.count, Int32(MSG_NOSIGNAL)) == payload.count else {
        throw ValidationError("kernel send failed")
      }
      var reply = [UInt8](repeating: 0, count: payload.count)
      var got = 0
      while got < payload.count {
        let n = reply.withUnsafeMutableBytes { recv(kernelClient, $0.baseAddress! + got, payload.count - got, 0) }
        guard n > 0 else { throw ValidationError("kernel echo lost") }
        got += n
      }
      guard reply == payload else { throw ValidationError("kernel echo corrupted") }
      while try !protocolClient.trySend(payload) { usleep(100) }
      var echoed: [UInt8]?
      let deadline = EventLoop.now() + 5_000_000_000
      while echoed == nil && EventLoop.now() < deadline {
        var entry = pollfd(fd: protocolClient.fileDescriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, 100)
        if case .message(let m) = try protocolClient.tryReceive() { echoed = m }
      }
      guard echoed == payload else { throw ValidationError("UserProto echo lost or corrupted") }
    }
    shared.stop.store(true, ordering: .releasing)
    app.join()
    return shared.report.withLock { $0 }
  }

  /// One poll(2) set: a kernel TCP socket and a UserProto socket's fd.
  private static func serveWithPoll(_ kernel: Int32, _ proto: LengthPrefixedSocket, _ shared: Shared) {
    var fds = [
      pollfd(fd: kernel, events: Int16(POLLIN), revents: 0),
      pollfd(fd: proto.fileDescriptor, events: Int16(POLLIN), revents: 0),
    ]
    while !shared.stop.load(ordering: .acquiring) {
      guard poll(&fds, 2, 50) > 0 else { continue }
      shared.report.withLock { $0.wakeups += 1 }
      if fds[0].revents & Int16(POLLIN) != 0 { echoKernel(kernel, shared) }
      if fds[1].revents & Int16(POLLIN) != 0 { echoProtocol(proto, shared) }
    }
  }

  /// One epoll set on the app's thread, level-triggered.
  private static func serveWithEpoll(_ kernel: Int32, _ proto: LengthPrefixedSocket, _ shared: Shared) {
    let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
    defer { close(ep) }
    for (fd, tag) in [(kernel, UInt64(0)), (proto.fileDescriptor, UInt64(1))] {
      var event = epoll_event()
      event.events = EPOLLIN.rawValue
      event.data.u64 = tag
      _ = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &event)
    }
    var events = [epoll_event](repeating: epoll_event(), count: 2)
    while !shared.stop.load(ordering: .acquiring) {
      let n = epoll_wait(ep, &events, 2, 50)
      guard n > 0 else { continue }
      shared.report.withLock { $0.wakeups += 1 }
      for i in 0..<Int(n) {
        if events[i].data.u64 == 0 { echoKernel(kernel, shared) } else { echoProtocol(proto, shared) }
      }
    }
    var unused = epoll_event()
    _ = epoll_ctl(ep, EPOLL_CTL_DEL, proto.fileDescriptor, &unused)
  }

  private static func echoKernel(_ fd: Int32, _ shared: Shared) {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
    guard n > 0 else { return }
    _ = send(fd, buffer, n, Int32(MSG_NOSIGNAL))
    shared.report.withLock { $0.kernelEchoes += 1 }
  }

  private static func echoProtocol(_ socket: LengthPrefixedSocket, _ shared: Shared) {
    while case .message(let m) = (try? socket.tryReceive()) ?? .wouldBlock {
      _ = try? socket.trySend(m)
      shared.report.withLock { $0.protocolEchoes += 1 }
    }
  }

  final class Shared: Sendable {
    let report: Mutex<Report>
    let stop = Atomic<Bool>(false)
    init(_ report: Report) { self.report = Mutex(report) }
  }

  /// A connected pair of ordinary kernel TCP sockets on loopback.
  static func kernelTCPPair() throws -> (server: Int32, client: Int32) {
    let flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    let listener = socket(AF_INET, flags, 0)
    defer { close(listener) }
    let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
    guard any.withSockaddr({ bind(listener, $0, $1) }) == 0, listen(listener, 1) == 0 else {
      throw ValidationError("listen failed")
    }
    var storage = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) }
    }
    let client = socket(AF_INET, flags, 0)
    let rc = withUnsafePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
    }
    guard rc == 0 else { throw ValidationError("connect failed") }
    let server = accept(listener, nil, nil)
    _ = fcntl(server, F_SETFD, FD_CLOEXEC)
    return (server, client)
  }
}

/// A thread for the app's own event loop.
final class AppThread: Sendable {
  private let done = DispatchSemaphore(value: 0)
  init(_ body: @escaping @Sendable () -> Void) {
    DispatchQueue.global().async { [done] in
      body()
      done.signal()
    }
  }
  func join() { done.wait() }
  /// Lets the thread run on its own.
  func detach() {}
}

/// `userproto mixed-poll`: runs the app both ways and prints what it did.
struct MixedPollCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mixed-poll",
    abstract: "Poll UserProto sockets next to kernel TCP sockets in one poll set and one epoll set.")

  @Option(help: "Messages per connection.")
  var messages = 100

  func run() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    for useEpoll in [false, true] {
      print(try MixedPoll.run(loop: loop, messages: messages, useEpoll: useEpoll))
    }
  }
}
