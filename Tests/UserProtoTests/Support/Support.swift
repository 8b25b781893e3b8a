import CUserProtoShim
import Dispatch
import Glibc
import Locking
import TestSupport
import Testing

@testable import UserProto

/// Both loop engines; every loop test runs under each.
let loopBackends: [EventLoop.BackendChoice] = [.ioUring, .epoll]

func makeLoop(_ backend: EventLoop.BackendChoice, entries: UInt32 = 256) throws -> EventLoop {
  // An io_uring case is cancelled with the reason on a host that refuses it.
  try makeTestLoop(backend, entries: entries)
}

/// A thread-safe box for results collected by handlers on the loop.
final class Collector<T: Sendable>: Sendable {
  private let items = Lock<[T]>([])
  func append(_ item: T) { items.withLock { $0.append(item) } }
  var values: [T] { items.withLock { $0 } }
  var count: Int { items.withLock { $0.count } }
}

/// Waits until `condition` holds or `seconds` pass; returns the condition.
@discardableResult
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
  let deadline = EventLoop.now() + UInt64(seconds * 1e9)
  while !condition() {
    if EventLoop.now() > deadline { return false }
    usleep(1000)
  }
  return true
}

/// Runs `body` on the loop and waits for it.
func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () throws -> T) throws -> T {
  let result = Lock<Result<T, any Error>?>(nil)
  let done = DispatchSemaphore(value: 0)
  try loop.execute {
    result.withLock { $0 = Result { try body() } }
    done.signal()
  }
  done.wait()
  return try result.withLock { $0! }.get()
}

/// The next socket `listener` hands out (a TCP connection or a UDP peer),
/// waiting up to 10 s; nil if none came.
func acceptSoon<S: ProtocolSocket>(_ listener: ProtocolListener<S>) -> S? {
  var socket: S?
  _ = eventually {
    socket = try? listener.tryAccept()
    return socket != nil
  }
  return socket
}

/// A loopback TCP listener on an ephemeral port (non-blocking, close-on-exec).
func tcpListener() throws -> (fd: Int32, address: SocketAddress) {
  let fd = socket(
    AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  try #require(fd >= 0)
  var one: Int32 = 1
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
  let any = try SocketAddress(ipv4: "127.0.0.1", port: 0)
  try #require(any.withSockaddr { bind(fd, $0, $1) } == 0)
  try #require(listen(fd, 128) == 0)
  var storage = sockaddr_storage()
  var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
  withUnsafeMutablePointer(to: &storage) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
  }
  let address = withUnsafeBytes(of: &storage) {
    SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)]))
  }
  return (fd, address)
}

func tcpSocket() -> Int32 {
  socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
}

func streamPair() throws -> (Int32, Int32) {
  var fds: [Int32] = [-1, -1]
  try #require(
    socketpair(
      AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
      == 0)
  return (fds[0], fds[1])
}

/// Runs the check helper; returns its exit status and key=value output.
func runCheck(_ arguments: [String]) throws -> (status: Int32, values: [String: String]) {
  try HelperProcess.run(HelperProcess.path(of: "userproto-check"), arguments)
}
