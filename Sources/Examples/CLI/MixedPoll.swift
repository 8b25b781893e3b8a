import ArgumentParser
import CUserProtoShim  // epoll, which SwiftGlibc does not export
import Dispatch
import ExampleProtocols
import Glibc
import Locking
import Synchronization
import UserProto

/// An application that polls UserProto sockets next to plain kernel TCP
/// sockets, in one poll(2) set or in one epoll set on its own thread (not the
/// event loop), and reacts to each fd by its readiness alone.
///
/// The "app" echoes: whatever arrives on its server-side sockets, kernel or
/// UserProto, it sends back. Clients on the side check the echoes. The
/// UserProto side speaks the tutorial's length-prefixed protocol
/// (`Socket<FramedHandler>`, docs/tutorial.md): one socket listens, one
/// dials it.
enum MixedPoll {
  struct Report: Sendable, CustomStringConvertible {
    var mechanism: String
    var kernelEchoes = 0
    var protocolEchoes = 0
    var wakeups = 0
    /// Sockets the app stopped watching because they ended or failed.
    var dropped = 0
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
    // UserProto: a framed socket listening on loopback and one dialing it.
    // The dialer's sends wait in its send queue until its pipe is up and the
    // hellos are exchanged, so nothing waits for the connection here.
    let protocolServer = try Socket(FramedHandler(), loop: loop)
    defer { protocolServer.abort() }
    let bound = try protocolServer.listen("tcp://127.0.0.1:0")
    let protocolClient = try Socket(FramedHandler(), loop: loop)
    defer { protocolClient.abort() }
    try protocolClient.dial(bound)

    // The app runs on its own thread, the way an application's event loop
    // would, and knows nothing about UserProto's loop.
    let shared = Shared(Report(mechanism: useEpoll ? "epoll on an app thread" : "poll(2) on an app thread"))
    let app = AppThread { serve(kernelServer, protocolServer, shared, useEpoll: useEpoll) }

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

  /// The app's loop: echoes on both sockets until `shared.stop`, by
  /// readiness alone, in one poll(2) set or one epoll set.
  static func serve(_ kernel: Int32, _ proto: Socket<FramedHandler>, _ shared: Shared, useEpoll: Bool) {
    if useEpoll {
      serveWithEpoll(kernel, proto, shared)
    } else {
      serveWithPoll(kernel, proto, shared)
    }
  }

  /// The app's view of its UserProto socket: echoes that would have
  /// blocked (sent when POLLOUT comes), and whether it still watches it.
  ///
  /// The socket outlives its pipes: a peer that goes away is a pipe removed,
  /// which its fd does not show (it keeps listening, and stays quiet in the
  /// set). For the app it ends only when it fails or its handler finishes
  /// the message stream; its fd then stays readable for good, so it leaves
  /// the set.
  struct ProtocolPeer {
    var pending: [[UInt8]] = []
    var open = true
    /// The events to wait for: POLLOUT only while echoes wait, and no new
    /// messages are taken meanwhile (backpressure).
    var events: Int16 { Int16(pending.isEmpty ? POLLIN : POLLOUT) }
  }

  /// One poll(2) set: a kernel TCP socket and a UserProto socket's fd. A
  /// socket that ends or fails leaves the set (poll ignores negative fds),
  /// so it does not report POLLHUP/POLLERR over and over.
  private static func serveWithPoll(_ kernel: Int32, _ proto: Socket<FramedHandler>, _ shared: Shared) {
    var kernelOpen = true
    var peer = ProtocolPeer()
    while !shared.stop.load(ordering: .acquiring) {
      var fds = [
        pollfd(fd: kernelOpen ? kernel : -1, events: Int16(POLLIN), revents: 0),
        pollfd(fd: peer.open ? proto.fileDescriptor : -1, events: peer.events, revents: 0),
      ]
      guard poll(&fds, 2, 50) > 0 else { continue }
      shared.report.withLock { $0.wakeups += 1 }
      // Any event, POLLERR and POLLHUP included, leads to the call that
      // reports what happened.
      if fds[0].revents != 0 { kernelOpen = echoKernel(kernel, shared) }
      if fds[1].revents != 0 { echoProtocol(proto, &peer, shared) }
    }
  }

  /// One epoll set on the app's thread, level-triggered.
  private static func serveWithEpoll(_ kernel: Int32, _ proto: Socket<FramedHandler>, _ shared: Shared) {
    let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
    guard ep >= 0 else { return }
    defer { close(ep) }
    func register(_ operation: Int32, _ fd: Int32, _ events: Int16, tag: UInt64) {
      var event = epoll_event()
      event.events = UInt32(UInt16(bitPattern: events))
      event.data.u64 = tag
      _ = epoll_ctl(ep, operation, fd, &event)
    }
    var kernelOpen = true
    var peer = ProtocolPeer()
    register(EPOLL_CTL_ADD, kernel, Int16(POLLIN), tag: 0)
    register(EPOLL_CTL_ADD, proto.fileDescriptor, peer.events, tag: 1)
    var events = [epoll_event](repeating: epoll_event(), count: 2)
    while !shared.stop.load(ordering: .acquiring) {
      let n = epoll_wait(ep, &events, 2, 50)
      guard n > 0 else { continue }
      shared.report.withLock { $0.wakeups += 1 }
      for i in 0..<Int(n) {
        if events[i].data.u64 == 0 {
          kernelOpen = echoKernel(kernel, shared)
          if !kernelOpen { register(EPOLL_CTL_DEL, kernel, 0, tag: 0) }
        } else {
          let before = peer.events
          echoProtocol(proto, &peer, shared)
          if !peer.open {
            register(EPOLL_CTL_DEL, proto.fileDescriptor, 0, tag: 1)
          } else if peer.events != before {
            register(EPOLL_CTL_MOD, proto.fileDescriptor, peer.events, tag: 1)
          }
        }
      }
    }
    // Leave the set before the socket's fd can be closed.
    if peer.open { register(EPOLL_CTL_DEL, proto.fileDescriptor, 0, tag: 1) }
  }

  /// Echoes what the kernel socket has; false once it ended or failed.
  private static func echoKernel(_ fd: Int32, _ shared: Shared) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
    if n < 0 && (errno == EAGAIN || errno == EINTR) { return true }
    guard n > 0 else {
      shared.report.withLock { $0.dropped += 1 }
      return false
    }
    _ = send(fd, buffer, n, Int32(MSG_NOSIGNAL))
    shared.report.withLock { $0.kernelEchoes += 1 }
    return true
  }

  /// Sends waiting echoes, then echoes new messages until a send would
  /// block. A socket that ends or fails is no longer watched.
  static func echoProtocol(_ socket: Socket<FramedHandler>, _ peer: inout ProtocolPeer, _ shared: Shared) {
    do {
      while let reply = peer.pending.first {
        guard try socket.trySend(reply) else { return }
        peer.pending.removeFirst()
      }
      while true {
        switch try socket.tryReceive() {
        case .message(let m):
          shared.report.withLock { $0.protocolEchoes += 1 }
          if try !socket.trySend(m) {
            peer.pending.append(m)
            return
          }
        case .wouldBlock:
          return
        case .endOfStream:
          drop(&peer, shared)
          return
        }
      }
    } catch {
      drop(&peer, shared)
    }
  }

  private static func drop(_ peer: inout ProtocolPeer, _ shared: Shared) {
    peer.open = false
    peer.pending = []
    shared.report.withLock { $0.dropped += 1 }
  }

  final class Shared: Sendable {
    let report: Lock<Report>
    let stop = Atomic<Bool>(false)
    init(_ report: Report) { self.report = Lock(report) }
  }

  /// A connected pair of ordinary kernel TCP sockets on loopback, both
  /// close-on-exec (the accepted one from accept4, non-blocking too).
  static func kernelTCPPair() throws -> (server: Int32, client: Int32) {
    let flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    let listener = socket(AF_INET, flags, 0)
    guard listener >= 0 else { throw ValidationError("socket failed: errno \(errno)") }
    defer { close(listener) }
    let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
    guard any.withSockaddr({ bind(listener, $0, $1) }) == 0, listen(listener, 1) == 0 else {
      throw ValidationError("listen failed: errno \(errno)")
    }
    var storage = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) }
    }
    let client = socket(AF_INET, flags, 0)
    guard client >= 0 else { throw ValidationError("socket failed: errno \(errno)") }
    let rc = withUnsafePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
    }
    guard rc == 0 else {
      let code = errno
      close(client)
      throw ValidationError("connect failed: errno \(code)")
    }
    let server = up_accept(listener)
    guard server >= 0 else {
      let code = errno
      close(client)
      throw ValidationError("accept failed: errno \(code)")
    }
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
