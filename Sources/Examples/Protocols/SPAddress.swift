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

  /// `bad address URL: REASON`.
  public var description: String { "bad address \(url): \(reason)" }
}

/// Addresses in the nanomsg/NNG convention: `tcp://HOST:PORT`, where HOST is
/// an IPv4 address, an IPv6 address in brackets (`tcp://[::1]:5555`, with
/// an optional `%zone`), `*` for any (IPv4), or a host name, resolved with
/// getaddrinfo (its IPv4 address if it has one, else its IPv6 address);
/// `tcp4://` and `tcp6://` (as NNG) keep to one family, and `tcp6://*:PORT`
/// is the IPv6 any address. `ipc:///path/to/socket` is a Unix-domain socket,
/// which SP peers frame differently (see ``SPFraming``).
public enum SPAddress {
  /// Parses `url` into a socket address.
  /// - Throws: ``SPAddressError`` saying what is wrong.
  public static func parse(_ url: String) throws(SPAddressError) -> SocketAddress {
    for (scheme, families) in [("tcp://", [AF_INET, AF_INET6]), ("tcp4://", [AF_INET]), ("tcp6://", [AF_INET6])]
    where url.hasPrefix(scheme) {
      return try parseTCP(url, String(url.dropFirst(scheme.count)), families: families)
    }
    if url.hasPrefix("ipc://") {
      let path = String(url.dropFirst("ipc://".count))
      guard !path.isEmpty else { throw SPAddressError(url, "expected ipc://PATH") }
      do {
        return try SocketAddress(unixPath: path)
      } catch {
        throw SPAddressError(url, "the path is longer than a Unix-domain socket path can be (107 bytes)")
      }
    }
    throw SPAddressError(url, "expected tcp://HOST:PORT, tcp4://, tcp6:// or ipc://PATH")
  }

  private static func parseTCP(
    _ url: String, _ rest: String, families: [Int32]
  ) throws(SPAddressError) -> SocketAddress {
    let scheme = String(url.prefix { $0 != ":" })
    var host: String
    let portText: Substring
    if rest.hasPrefix("[") {
      // [IPv6]:PORT
      guard let close = rest.firstIndex(of: "]") else { throw SPAddressError(url, "expected [IPv6 address]:PORT") }
      host = String(rest[rest.index(after: rest.startIndex)..<close])
      let after = rest[rest.index(after: close)...]
      guard after.hasPrefix(":") else { throw SPAddressError(url, "expected \(scheme)://[IPv6 address]:PORT") }
      portText = after.dropFirst()
      guard families.contains(AF_INET6) else { throw SPAddressError(url, "tcp4:// takes an IPv4 address") }
    } else {
      guard let colon = rest.lastIndex(of: ":") else { throw SPAddressError(url, "expected \(scheme)://HOST:PORT") }
      host = String(rest[..<colon])
      portText = rest[rest.index(after: colon)...]
      if host.contains(":") {
        throw SPAddressError(url, "an IPv6 address goes in brackets: \(scheme)://[\(host)]:\(portText)")
      }
    }
    guard let port = UInt16(portText) else {
      throw SPAddressError(url, "the port must be a number from 0 to 65535, not \"\(portText)\"")
    }
    if rest.hasPrefix("[") {
      guard let address = try? SocketAddress(ipv6: host, port: port) else {
        throw SPAddressError(url, "\(host.isEmpty ? "[]" : host) is not an IPv6 address")
      }
      return address
    }
    if host == "*" || host.isEmpty { host = families == [AF_INET6] ? "::" : "0.0.0.0" }
    if let address = try? SocketAddress(ip: host, port: port) {
      guard families.contains(address.family) else {
        throw SPAddressError(url, "\(host) is not an \(families == [AF_INET] ? "IPv4" : "IPv6") address")
      }
      return address
    }
    return try resolve(url, host, port: port, families: families)
  }

  /// The address of `host` in the first of `families` that it has.
  private static func resolve(
    _ url: String, _ host: String, port: UInt16, families: [Int32]
  ) throws(SPAddressError) -> SocketAddress {
    // getaddrinfo reads a C string: a NUL byte would end the name early.
    guard !host.utf8.contains(0) else {
      throw SPAddressError(url, "the host name \(host.debugDescription) has a NUL byte")
    }
    var hints = addrinfo()
    hints.ai_family = families.count == 1 ? families[0] : AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &list)
    defer { if let list { freeaddrinfo(list) } }
    guard rc == 0 else { throw SPAddressError(url, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))") }
    var found: [SocketAddress] = []
    var entry = list
    while let current = entry {
      if let raw = current.pointee.ai_addr, families.contains(current.pointee.ai_family),
        let address = try? SocketAddress(sockaddr: raw, length: current.pointee.ai_addrlen)
      {
        found.append(address.withPort(port))
      }
      entry = current.pointee.ai_next
    }
    for family in families {
      if let address = found.first(where: { $0.family == family }) { return address }
    }
    throw SPAddressError(url, "cannot resolve \(host): no address of that family")
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
