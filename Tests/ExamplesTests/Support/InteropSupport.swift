import Glibc
import UserProto

// Support for the interoperability tests: waiting without blocking a test
// thread, loops per backend, and raw TCP clients that speak SP/TCP by hand.

/// The loop backends every interop test runs under.
let interopBackends: [EventLoop.BackendChoice] = [.ioUring, .epoll]

/// Re-checks `condition` every `interval` (sleeping, so no test thread is
/// blocked) until it holds or `timeout` passes; returns whether it held.
func waitUntil(
  _ timeout: Duration, every interval: Duration = .milliseconds(5), _ condition: () throws -> Bool
) async rethrows -> Bool {
  let deadline = ContinuousClock.now + timeout
  while true {
    if try condition() { return true }
    if ContinuousClock.now >= deadline { return false }
    try? await Task.sleep(for: interval)
  }
}

/// Runs `body` with a fresh loop on `backend` and shuts the loop down after.
func withLoop<T>(_ backend: EventLoop.BackendChoice, _ body: (EventLoop) async throws -> T) async throws -> T {
  let loop = try EventLoop(configuration: .init(backend: backend, name: "interop-\(backend)"))
  do {
    let result = try await body(loop)
    await loop.shutdown()
    return result
  } catch {
    await loop.shutdown()
    throw error
  }
}

/// The poll(2) events `fd` shows right now (without waiting).
func pollEvents(_ fd: Int32, _ events: Int16 = Int16(POLLIN)) -> Int16 {
  var entry = pollfd(fd: fd, events: events, revents: 0)
  return poll(&entry, 1, 0) == 1 ? entry.revents : 0
}

func loopback(_ port: UInt16) throws -> SocketAddress { try SocketAddress(ipv4: "127.0.0.1", port: port) }

// MARK: - Raw SP/TCP clients

/// The SP/TCP header for protocol `id`, with the given magic.
func spHeader(_ id: UInt16, magic: [UInt8] = [0x00, 0x53, 0x50, 0x00]) -> [UInt8] {
  magic + [UInt8(id >> 8), UInt8(id & 0xff), 0x00, 0x00]
}

/// A 64-bit big-endian SP frame length.
func spLength(_ n: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: n >> (56 - 8 * UInt64($0))) } }

/// A request frame as a REQ peer sends it: length, request id, body.
func spRequest(id: UInt32, _ body: [UInt8]) -> [UInt8] {
  let payload = [UInt8(id >> 24), UInt8(id >> 16 & 0xff), UInt8(id >> 8 & 0xff), UInt8(id & 0xff)] + body
  return spLength(UInt64(payload.count)) + payload
}

/// A plain blocking TCP client that the test drives byte by byte; reads
/// wait with poll(2) slices so the test thread is not held.
final class RawClient {
  let fd: Int32

  enum Closure: Hashable, CustomStringConvertible {
    /// read returned 0.
    case endOfFile
    /// read failed with ECONNRESET.
    case reset
    /// read failed otherwise (errno).
    case failed(Int32)
    var description: String {
      switch self {
      case .endOfFile: "EOF"
      case .reset: "ECONNRESET"
      case .failed(let code): "errno \(code)"
      }
    }
  }

  /// Connects to `address`; a non-nil `receiveBuffer` sets SO_RCVBUF first
  /// (a small one makes a peer that never reads stall its sender soon).
  init(connectingTo address: SocketAddress, receiveBuffer: Int32? = nil) throws {
    fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw InteropFailure("socket: errno \(errno)") }
    if var size = receiveBuffer {
      _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    let rc = address.withSockaddr { connect(fd, $0, $1) }
    guard rc == 0 else {
      let e = errno
      close(fd)
      throw InteropFailure("connect \(address): errno \(e)")
    }
  }

  /// Adopts an accepted connection.
  init(adopting fd: Int32) { self.fd = fd }

  deinit { close(fd) }

  /// Reads one SP/TCP frame's payload (nil if it did not come in time).
  func readFrame(within timeout: Duration) async -> [UInt8]? {
    let prefix = await read(8, within: timeout)
    guard prefix.bytes.count == 8 else { return nil }
    let length = prefix.bytes.reduce(0) { $0 << 8 | Int($1) }
    let payload = await read(length, within: timeout)
    return payload.bytes.count == length ? payload.bytes : nil
  }

  func send(_ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
      let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { throw InteropFailure("send: errno \(errno)") }
      offset += n
    }
  }

  func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

  /// Reads until `count` bytes arrived, the connection closed, or `timeout`.
  func read(_ count: Int, within timeout: Duration) async -> (bytes: [UInt8], closure: Closure?) {
    var bytes: [UInt8] = []
    var closure: Closure?
    var chunk = [UInt8](repeating: 0, count: 65536)
    _ = await waitUntil(timeout, every: .milliseconds(2)) {
      while bytes.count < count && closure == nil && pollEvents(fd) != 0 {
        let n = Glibc.read(fd, &chunk, min(chunk.count, count - bytes.count))
        if n > 0 {
          bytes += chunk[0..<n]
        } else if n == 0 {
          closure = .endOfFile
        } else if errno != EINTR && errno != EAGAIN {
          closure = errno == ECONNRESET ? .reset : .failed(errno)
        }
      }
      return bytes.count >= count || closure != nil
    }
    return (bytes, closure)
  }

  /// Waits for the other side to close; returns how, and whatever bytes
  /// came before (nil closure: still open after `timeout`).
  func waitForClose(within timeout: Duration) async -> (bytes: [UInt8], closure: Closure?) {
    await read(Int.max, within: timeout)
  }
}

/// A plain TCP listener on 127.0.0.1 playing an SP peer by hand.
final class RawListener {
  let fd: Int32
  let address: SocketAddress

  init() throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw InteropFailure("socket: errno \(errno)") }
    self.fd = fd
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
        bind(fd, sa, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, sa, &length) == 0
      }
    }
    guard ok else {
      let e = errno
      close(fd)
      throw InteropFailure("bind/listen: errno \(e)")
    }
    self.address = try loopback(UInt16(bigEndian: address.sin_port))
  }

  deinit { close(fd) }

  /// The next connection, or nil if none came within `timeout`.
  func accept(within timeout: Duration) async -> RawClient? {
    var client: RawClient?
    _ = await waitUntil(timeout) {
      guard pollEvents(fd) & Int16(POLLIN) != 0 else { return false }
      let c = acceptCloseOnExec(fd)
      if c >= 0 { client = RawClient(adopting: c) }
      return client != nil
    }
    return client
  }
}

/// A REQ frame's payload split into its request id and body.
func splitRequest(_ payload: [UInt8]) -> (id: UInt32, body: [UInt8])? {
  guard payload.count >= 4 else { return nil }
  let id = payload[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
  return (id, Array(payload[4...]))
}

/// A 32-bit big-endian word.
func spWord(_ value: UInt32) -> [UInt8] {
  [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
}

/// accept4(2) with SOCK_CLOEXEC (Glibc does not import it without
/// _GNU_SOURCE), so no accepted fd leaks into the peers the tests spawn.
func acceptCloseOnExec(_ listener: Int32) -> Int32 {
  typealias Accept4 =
    @convention(c) (Int32, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<socklen_t>?, Int32)
    -> Int32
  guard let symbol = dlsym(nil, "accept4") else { return -1 }
  return unsafeBitCast(symbol, to: Accept4.self)(listener, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
}
