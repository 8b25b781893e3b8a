import Glibc
public import UserProto

/// An address that could not be used, and why.
public struct SPAddressError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The address as given.
  public let url: String
  /// What is wrong with it.
  public let reason: String

  /// The error for `url`, saying `reason`.
  public init(_ url: String, _ reason: String) {
    self.url = url
    self.reason = reason
  }

  public var description: String { "bad address \(url): \(reason)" }
}

/// Addresses in the nanomsg/NNG convention: `tcp://HOST:PORT` (an IPv4
/// address, `*` for any, or a host name resolved to IPv4), or
/// `ipc:///path/to/socket` for a Unix-domain socket, which SP peers frame
/// differently (see ``SPSocket/Framing``).
public enum SPAddress {
  /// Parses `url` into a socket address; host names are resolved with
  /// getaddrinfo (IPv4 only).
  /// - Throws: ``SPAddressError`` saying what is wrong.
  public static func parse(_ url: String) throws(SPAddressError) -> SocketAddress {
    if url.hasPrefix("tcp://") { return try parseTCP(url, String(url.dropFirst("tcp://".count))) }
    if url.hasPrefix("ipc://") {
      let path = String(url.dropFirst("ipc://".count))
      guard !path.isEmpty else { throw SPAddressError(url, "expected ipc://PATH") }
      do {
        return try SocketAddress(unixPath: path)
      } catch {
        throw SPAddressError(url, "the path is longer than a Unix-domain socket path can be (107 bytes)")
      }
    }
    throw SPAddressError(url, "expected tcp://HOST:PORT or ipc://PATH")
  }

  private static func parseTCP(_ url: String, _ rest: String) throws(SPAddressError) -> SocketAddress {
    if rest.hasPrefix("[") {
      throw SPAddressError(url, "IPv6 addresses are not supported; use an IPv4 address or a host name with one")
    }
    guard let colon = rest.lastIndex(of: ":") else { throw SPAddressError(url, "expected tcp://HOST:PORT") }
    let portText = rest[rest.index(after: colon)...]
    guard let port = UInt16(portText) else {
      throw SPAddressError(url, "the port must be a number from 0 to 65535, not \"\(portText)\"")
    }
    var host = String(rest[..<colon])
    if host.contains(":") {
      throw SPAddressError(url, "IPv6 addresses are not supported; use an IPv4 address or a host name with one")
    }
    if host == "*" || host.isEmpty { host = "0.0.0.0" }
    if let address = try? SocketAddress(ipv4: host, port: port) { return address }
    let resolved = try resolve(url, host)
    guard let address = try? SocketAddress(ipv4: resolved, port: port) else {
      throw SPAddressError(url, "\(host) resolved to \(resolved), which is not an IPv4 address")
    }
    return address
  }

  /// The first IPv4 address of `host`, in dotted form.
  private static func resolve(_ url: String, _ host: String) throws(SPAddressError) -> String {
    var hints = addrinfo()
    hints.ai_family = AF_INET
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &list)
    defer { if let list { freeaddrinfo(list) } }
    guard rc == 0, let first = list, let address = first.pointee.ai_addr else {
      let why = rc == 0 ? "no IPv4 address" : String(cString: gai_strerror(rc))
      throw SPAddressError(url, "cannot resolve \(host): \(why)")
    }
    let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
      withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) }
    }
    return bytes.map(String.init).joined(separator: ".")
  }

  /// Removes the file a listener on a Unix-domain `address` created (nng
  /// does so too when its IPC listener closes); nothing for other addresses.
  static func removeSocketFile(of address: SocketAddress) {
    guard address.family == AF_UNIX else { return }
    let path = String(address.description.dropFirst("unix:".count))
    if !path.isEmpty { unlink(path) }
  }

  /// The SP URL of `address`: `tcp://IP:PORT` or `ipc://PATH`.
  public static func url(for address: SocketAddress) -> String {
    let text = address.description
    if address.family == AF_UNIX { return "ipc://" + text.dropFirst("unix:".count) }
    return "tcp://" + text
  }
}
