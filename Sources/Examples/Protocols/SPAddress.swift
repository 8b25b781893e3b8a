public import UserProto

/// Addresses in the nanomsg/NNG convention: `tcp://127.0.0.1:5555`, or
/// `ipc:///path/to/socket` for a Unix-domain socket.
public enum SPAddress {
  public static func parse(_ url: String) throws -> SocketAddress {
    if url.hasPrefix("tcp://") {
      let rest = url.dropFirst("tcp://".count)
      guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
        throw SocketError.protocolViolation("bad address \(url): expected tcp://HOST:PORT")
      }
      var host = String(rest[..<colon])
      if host == "*" || host.isEmpty { host = "0.0.0.0" }
      if host == "localhost" { host = "127.0.0.1" }
      return try SocketAddress(ipv4: host, port: port)
    }
    if url.hasPrefix("ipc://") { return try SocketAddress(unixPath: String(url.dropFirst("ipc://".count))) }
    throw SocketError.protocolViolation("bad address \(url): expected tcp://HOST:PORT or ipc://PATH")
  }
}
