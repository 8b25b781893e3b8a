import CUserProtoShim
import Glibc

/// Kernel socket helpers for transports and listeners.
enum Sockets {
  private static var streamFlags: Int32 {
    Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
  }

  static func stream(family: Int32) throws(IOError) -> Int32 {
    let fd = socket(family, streamFlags, 0)
    guard fd >= 0 else { throw IOError("socket", errno) }
    return fd
  }

  static func setNoDelay(_ fd: Int32) {
    var one: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
  }

  /// What every TCP connection of a socket gets, dialed or accepted:
  /// TCP_NODELAY, and the keep-alive and user timeout of `options`. Best
  /// effort, as TCP_NODELAY always was: a refused option leaves the
  /// kernel's default.
  static func configureTCP(_ fd: Int32, _ options: SocketOptions) {
    setNoDelay(fd)
    guard let keepAlive = options.tcpKeepAlive else { return }
    func option(_ level: Int32, _ name: Int32, _ value: Int32) {
      var value = value
      _ = setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    }
    let tcp = Int32(IPPROTO_TCP)
    option(SOL_SOCKET, SO_KEEPALIVE, 1)
    option(tcp, TCP_KEEPIDLE, keepAlive.idleSeconds)
    option(tcp, TCP_KEEPINTVL, keepAlive.intervalSeconds)
    option(tcp, TCP_KEEPCNT, keepAlive.probeCount)
    let timeoutMilliseconds = keepAlive.detectionTime.components.seconds * 1000
    option(tcp, TCP_USER_TIMEOUT, Int32(min(timeoutMilliseconds, Int64(Int32.max))))
  }

  /// A bound, listening stream socket; returns it with its actual address.
  static func listen(on address: SocketAddress, backlog: Int32 = 512) throws(IOError) -> (Int32, SocketAddress) {
    let fd = try stream(family: address.family)
    var one: Int32 = 1
    if address.isIP { _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4) }
    do throws(IOError) {
      guard address.withSockaddr({ bind(fd, $0, $1) }) == 0 else { throw IOError("bind(\(address))", errno) }
      guard Glibc.listen(fd, backlog) == 0 else { throw IOError("listen", errno) }
      return (fd, try localAddress(fd))
    } catch {
      Glibc.close(fd)
      throw error
    }
  }

  static func localAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try address(of: fd, "getsockname", getsockname)
  }

  /// The address of a connected socket's peer.
  static func remoteAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try address(of: fd, "getpeername", getpeername)
  }

  private static func address(
    of fd: Int32, _ name: String,
    _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
  ) throws(IOError) -> SocketAddress {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) }
    }
    guard rc == 0 else { throw IOError(name, errno) }
    return withUnsafeBytes(of: &storage) { SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
  }

  /// The largest datagram a connected datagram socket can send: 65,507
  /// bytes for UDP over IPv4 (65,535 minus the IP and UDP headers), 65,527
  /// over IPv6, and for Unix-domain datagrams the send buffer minus the 32
  /// bytes Linux reserves (`unix_dgram_sendmsg` fails larger ones with
  /// EMSGSIZE).
  static func maximumDatagramSize(_ fd: Int32, family: Int32) -> Int {
    switch family {
    case AF_INET: return 65_507
    case AF_INET6: return 65_527
    default:
      var size: Int32 = 0
      var length = socklen_t(MemoryLayout<Int32>.size)
      guard getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &length) == 0 else { return 65_507 }
      return max(0, Int(size) - 32)
    }
  }

  /// An unconnected UDP socket bound to `address`, with its actual address.
  static func udpBound(on address: SocketAddress) throws(IOError) -> (Int32, SocketAddress) {
    let fd = socket(
      address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw IOError("socket", errno) }
    do throws(IOError) {
      guard address.withSockaddr({ bind(fd, $0, $1) }) == 0 else { throw IOError("bind(\(address))", errno) }
      return (fd, try localAddress(fd))
    } catch {
      Glibc.close(fd)
      throw error
    }
  }

  static func udp(local: SocketAddress, remote: SocketAddress) throws(IOError) -> Int32 {
    let fd = socket(
      local.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw IOError("socket", errno) }
    guard local.withSockaddr({ bind(fd, $0, $1) }) == 0 else {
      let code = errno
      Glibc.close(fd)
      throw IOError("bind(\(local))", code)
    }
    guard remote.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
      let code = errno
      Glibc.close(fd)
      throw IOError("connect(\(remote))", code)
    }
    return fd
  }
}
