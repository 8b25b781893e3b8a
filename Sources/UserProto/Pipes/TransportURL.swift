import Glibc

/// Where a socket dials or listens, written as a URL in NNG's syntax.
///
/// - `tcp://HOST:PORT`, `tcp://[IPv6]:PORT`, `tcp4://`, `tcp6://`: TCP. For
///   listening, `tcp://*:PORT` and `tcp://:PORT` mean every address (IPv4's
///   0.0.0.0; `tcp6://*:PORT` IPv6's ::). Host names are resolved once, when
///   the URL is parsed (getaddrinfo, which may block).
/// - `ipc:///absolute/path` or `ipc://relative/path`: a Unix-domain stream.
/// - `udp://HOST:PORT`: UDP, one message per datagram. A dialer is one pipe
///   to that peer; a listener makes a pipe per peer address it hears from.
/// - `inproc://NAME`: in this process, by name, no kernel socket.
public enum TransportURL: Sendable, Hashable, CustomStringConvertible {
  /// TCP to or on an IPv4 or IPv6 address.
  case tcp(SocketAddress)
  /// A Unix-domain stream socket at a path.
  case ipc(SocketAddress)
  /// UDP to or on an IPv4 or IPv6 address.
  case udp(SocketAddress)
  /// An in-process peer, by name.
  case inproc(String)

  /// What the URL is for: dialing needs a concrete host; listening accepts
  /// a wildcard.
  public enum Purpose: Sendable { case dial, listen }

  /// Parses `url` for `purpose`.
  /// - Throws: ``SocketError/badAddress(_:_:)`` naming what is wrong.
  public init(_ url: String, for purpose: Purpose) throws(SocketError) {
    func bad(_ why: String) -> SocketError { .badAddress(url, why) }
    let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
    guard parts.count == 2 else {
      throw bad("expected SCHEME://ADDRESS with a scheme of tcp, tcp4, tcp6, ipc, udp or inproc")
    }
    let scheme = parts[0].lowercased()
    let rest = String(parts[1])
    switch scheme {
    case "tcp": self = .tcp(try TransportURL.host(rest, [AF_INET, AF_INET6], purpose, url, udp: false))
    case "tcp4": self = .tcp(try TransportURL.host(rest, [AF_INET], purpose, url, udp: false))
    case "tcp6": self = .tcp(try TransportURL.host(rest, [AF_INET6], purpose, url, udp: false))
    case "udp": self = .udp(try TransportURL.host(rest, [AF_INET, AF_INET6], purpose, url, udp: true))
    case "ipc":
      guard !rest.isEmpty else { throw bad("expected ipc://PATH") }
      do {
        self = .ipc(try SocketAddress(unixPath: rest))
      } catch {
        throw bad("the path is longer than a Unix-domain socket path can be (107 bytes)")
      }
    case "inproc":
      guard !rest.isEmpty else { throw bad("expected inproc://NAME") }
      self = .inproc(rest)
    default:
      throw bad("unknown scheme \(scheme)://; expected tcp, tcp4, tcp6, ipc, udp or inproc")
    }
  }

  /// The URL in NNG's syntax: `tcp://HOST:PORT`, `ipc://PATH`, `udp://HOST:PORT` or `inproc://NAME`.
  public var description: String {
    switch self {
    case .tcp(let address): "tcp://\(address)"
    case .udp(let address): "udp://\(address)"
    case .ipc(let address): "ipc://\(address.description.dropFirst("unix:".count))"
    case .inproc(let name): "inproc://\(name)"
    }
  }

  private static func host(
    _ rest: String, _ families: [Int32], _ purpose: Purpose, _ url: String, udp: Bool
  ) throws(SocketError) -> SocketAddress {
    func bad(_ why: String) -> SocketError { .badAddress(url, why) }
    var host: String
    let portText: Substring
    let bracketed = rest.hasPrefix("[")
    if bracketed {
      guard let close = rest.firstIndex(of: "]") else { throw bad("expected [IPv6 address]:PORT") }
      host = String(rest[rest.index(after: rest.startIndex)..<close])
      let after = rest[rest.index(after: close)...]
      guard after.hasPrefix(":") else { throw bad("expected [IPv6 address]:PORT") }
      portText = after.dropFirst()
      guard families.contains(AF_INET6) else { throw bad("an IPv4-only scheme takes an IPv4 address") }
    } else {
      guard let colon = rest.lastIndex(of: ":") else { throw bad("expected HOST:PORT") }
      host = String(rest[..<colon])
      portText = rest[rest.index(after: colon)...]
      if host.contains(":") { throw bad("an IPv6 address goes in brackets: [\(host)]:\(portText)") }
    }
    guard let port = UInt16(portText) else {
      throw bad("the port must be a number from 0 to 65535, not \"\(portText)\"")
    }
    if !bracketed && (host == "*" || host.isEmpty) {
      guard purpose == .listen else { throw bad("a dialer needs a host, not a wildcard") }
      host = families == [AF_INET6] ? "::" : "0.0.0.0"
    }
    if let address = try? SocketAddress(ip: host, port: port) {
      guard families.contains(address.family) else {
        throw bad("\(host) is not an \(families == [AF_INET] ? "IPv4" : "IPv6") address")
      }
      return address
    }
    if bracketed { throw bad("\(host.isEmpty ? "[]" : host) is not an IPv6 address") }
    return try resolve(host, port: port, families: families, udp: udp, url)
  }

  private static func resolve(
    _ host: String, port: UInt16, families: [Int32], udp: Bool, _ url: String
  ) throws(SocketError) -> SocketAddress {
    // getaddrinfo reads a C string: a NUL byte would end the name early.
    guard !host.utf8.contains(0) else {
      throw .badAddress(url, "the host name \(host.debugDescription) has a NUL byte")
    }
    var hints = addrinfo()
    hints.ai_family = families.count == 1 ? families[0] : AF_UNSPEC
    hints.ai_socktype = Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &list)
    defer { if let list { freeaddrinfo(list) } }
    guard rc == 0 else { throw .badAddress(url, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))") }
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
    throw .badAddress(url, "cannot resolve \(host): no address of that family")
  }
}
