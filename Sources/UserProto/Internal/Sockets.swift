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

  /// A bound, listening stream socket; returns it with its actual address.
  static func listen(on address: SocketAddress, backlog: Int32 = 512) throws(IOError) -> (Int32, SocketAddress) {
    let fd = try stream(family: address.family)
    var one: Int32 = 1
    if address.family == AF_INET { _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4) }
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
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard rc == 0 else { throw IOError("getsockname", errno) }
    return withUnsafeBytes(of: &storage) { SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
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
