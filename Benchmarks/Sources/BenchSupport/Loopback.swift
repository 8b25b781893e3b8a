import Glibc

/// Loopback TCP helpers (raw fds; the benchmarks own and close them).
public enum Loopback {
  /// A listening socket on 127.0.0.1; returns it and its port.
  public static func listen(port: UInt16 = 0, nonBlocking: Bool = false) -> (fd: Int32, port: UInt16) {
    var flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    if nonBlocking { flags |= Int32(SOCK_NONBLOCK.rawValue) }
    let fd = socket(AF_INET, flags, 0)
    precondition(fd >= 0, "socket: \(errno)")
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
        guard bind(fd, p, length) == 0, Glibc.listen(fd, 512) == 0 else { return -1 }
        return getsockname(fd, p, &length)
      }
    }
    precondition(rc == 0, "bind/listen: \(errno)")
    return (fd, UInt16(bigEndian: address.sin_port))
  }

  /// A blocking connection to 127.0.0.1:`port`.
  public static func connect(port: UInt16) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    precondition(fd >= 0, "socket: \(errno)")
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let rc = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    precondition(rc == 0, "connect: \(errno)")
    return fd
  }

  /// Two connected TCP sockets over loopback, non-blocking, TCP_NODELAY.
  public static func pair() -> (Int32, Int32) {
    let (listener, port) = listen()
    let a = connect(port: port)
    let b = accept(listener, nil, nil)
    precondition(b >= 0, "accept: \(errno)")
    Glibc.close(listener)
    for fd in [a, b] {
      setNoDelay(fd)
      setNonBlocking(fd)
    }
    return (a, b)
  }

  public static func setNoDelay(_ fd: Int32) {
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
  }

  public static func setNonBlocking(_ fd: Int32) {
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
  }
}

/// Reads a big-endian UInt32 length prefix at `offset`.
@inline(__always) public func readLength(_ bytes: [UInt8], at offset: Int) -> Int {
  Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
}

/// A 4-byte big-endian length prefix followed by `size` payload bytes.
public func framedMessage(size: Int) -> [UInt8] {
  var bytes = [UInt8(size >> 24 & 0xff), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff)]
  bytes.reserveCapacity(4 + size)
  for i in 0..<size { bytes.append(UInt8(truncatingIfNeeded: i &* 7 &+ 1)) }
  return bytes
}
