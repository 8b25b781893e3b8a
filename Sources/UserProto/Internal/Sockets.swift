import Glibc

/// Kernel socket helpers for transports and listeners, on top of ``Sys``.
/// A helper that fails closes what it opened.
enum Sockets {
  private static var streamFlags: Int32 {
    Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
  }

  private static var datagramFlags: Int32 {
    Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
  }

  static func stream(family: Int32) throws(IOError) -> Int32 {
    try Sys.socket(family: family, type: streamFlags)
  }

  /// TCP_NODELAY: messages leave at once instead of waiting for Nagle's
  /// algorithm to fill a segment.
  static func setNoDelay(_ fd: Int32) throws(IOError) {
    try Sys.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, Int32(1), "setsockopt(TCP_NODELAY)")
  }

  /// What every TCP connection of a socket gets, dialed or accepted:
  /// TCP_NODELAY, and the keep-alive and user timeout of `options`. Every
  /// option is checked: a connection whose options cannot be set is one the
  /// caller refuses (a dial attempt fails and is re-dialed; an accepted one
  /// is closed and counted).
  static func configureTCP(_ fd: Int32, _ options: SocketOptions) throws(IOError) {
    try setNoDelay(fd)
    guard let keepAlive = options.tcpKeepAlive else { return }
    let tcp = Int32(IPPROTO_TCP)
    try Sys.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, Int32(1), "setsockopt(SO_KEEPALIVE)")
    try Sys.setOption(fd, tcp, TCP_KEEPIDLE, keepAlive.idleSeconds, "setsockopt(TCP_KEEPIDLE)")
    try Sys.setOption(fd, tcp, TCP_KEEPINTVL, keepAlive.intervalSeconds, "setsockopt(TCP_KEEPINTVL)")
    try Sys.setOption(fd, tcp, TCP_KEEPCNT, keepAlive.probeCount, "setsockopt(TCP_KEEPCNT)")
    let timeoutMilliseconds = keepAlive.detectionTime.components.seconds * 1000
    try Sys.setOption(
      fd, tcp, TCP_USER_TIMEOUT, Int32(min(timeoutMilliseconds, Int64(Int32.max))), "setsockopt(TCP_USER_TIMEOUT)")
  }

  /// A bound, listening stream socket; returns it with its actual address.
  static func listen(on address: SocketAddress, backlog: Int32 = 512) throws(IOError) -> (Int32, SocketAddress) {
    let fd = try stream(family: address.family)
    do throws(IOError) {
      if address.isIP { try Sys.setOption(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1), "setsockopt(SO_REUSEADDR)") }
      try Sys.bind(fd, to: address)
      try Sys.listen(fd, backlog: backlog)
      return (fd, try localAddress(fd))
    } catch {
      Sys.close(fd)
      throw error
    }
  }

  static func localAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try Sys.localAddress(fd)
  }

  /// The address of a connected socket's peer.
  static func remoteAddress(_ fd: Int32) throws(IOError) -> SocketAddress {
    try Sys.remoteAddress(fd)
  }

  /// The largest datagram a connected datagram socket can send: 65,507
  /// bytes for UDP over IPv4 (65,535 minus the IP and UDP headers), 65,527
  /// over IPv6, and for Unix-domain datagrams the send buffer minus the 32
  /// bytes Linux reserves (`unix_dgram_sendmsg` fails larger ones with
  /// EMSGSIZE). When the send buffer cannot be read, the IPv4 limit: a
  /// datagram over the real one then fails its send with EMSGSIZE.
  static func maximumDatagramSize(_ fd: Int32, family: Int32) -> Int {
    switch family {
    case AF_INET: return 65_507
    case AF_INET6: return 65_527
    default:
      do throws(IOError) {
        let size = try Sys.intOption(fd, SOL_SOCKET, SO_SNDBUF, "getsockopt(SO_SNDBUF)")
        return max(0, Int(size) - 32)
      } catch {
        return 65_507
      }
    }
  }

  /// An unconnected UDP socket bound to `address`, with its actual address.
  static func udpBound(on address: SocketAddress) throws(IOError) -> (Int32, SocketAddress) {
    let fd = try Sys.socket(family: address.family, type: datagramFlags)
    do throws(IOError) {
      try Sys.bind(fd, to: address)
      return (fd, try localAddress(fd))
    } catch {
      Sys.close(fd)
      throw error
    }
  }

  static func udp(local: SocketAddress, remote: SocketAddress) throws(IOError) -> Int32 {
    let fd = try Sys.socket(family: local.family, type: datagramFlags)
    do throws(IOError) {
      try Sys.bind(fd, to: local)
      try Sys.connectDatagram(fd, to: remote)
      return fd
    } catch {
      Sys.close(fd)
      throw error
    }
  }
}
