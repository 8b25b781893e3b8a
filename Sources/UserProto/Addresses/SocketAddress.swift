public import Glibc

/// An IPv4, IPv6 or Unix-domain socket address.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
  var storage: [UInt8]

  /// An IPv4 address and port, e.g. `SocketAddress(ipv4: "127.0.0.1", port: 5555)`.
  /// Text with a NUL byte is refused: C would read it only up to the NUL.
  public init(ipv4 host: String, port: UInt16) throws(IOError) {
    try SocketAddress.refuseNUL(host)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw IOError("inet_pton(\(host))", EINVAL) }
    storage = withUnsafeBytes(of: &address) { Array($0) }
  }

  /// An IPv6 address and port, e.g. `SocketAddress(ipv6: "::1", port: 5555)`.
  /// A link-local address may name its interface after `%`
  /// (`"fe80::1%eth0"`, or the interface's index, `"fe80::1%2"`); so may
  /// `scopeID`, which a `%` suffix overrides. Text with a NUL byte is
  /// refused, as for IPv4.
  public init(ipv6 host: String, port: UInt16, scopeID: UInt32 = 0) throws(IOError) {
    try SocketAddress.refuseNUL(host)
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_port = port.bigEndian
    address.sin6_scope_id = scopeID
    var text = host
    if let percent = host.firstIndex(of: "%") {
      text = String(host[..<percent])
      let zone = String(host[host.index(after: percent)...])
      if let index = UInt32(zone) {
        address.sin6_scope_id = index
      } else {
        let index = if_nametoindex(zone)
        guard index != 0 else { throw IOError("if_nametoindex(\(zone)) for \(host)", errno == 0 ? ENODEV : errno) }
        address.sin6_scope_id = index
      }
    }
    guard inet_pton(AF_INET6, text, &address.sin6_addr) == 1 else { throw IOError("inet_pton(\(host))", EINVAL) }
    storage = withUnsafeBytes(of: &address) { Array($0) }
  }

  /// inet_pton and if_nametoindex read a C string, which ends at the first
  /// NUL byte: "1.2.3.4\0.example" would pass for 1.2.3.4.
  private static func refuseNUL(_ host: String) throws(IOError) {
    guard !host.utf8.contains(0) else {
      throw IOError("inet_pton(\(host.debugDescription)): a NUL byte in the address", EINVAL)
    }
  }

  /// An IPv4 or IPv6 address (whichever `host` is in numeric form) and port.
  public init(ip host: String, port: UInt16) throws(IOError) {
    if let v4 = try? SocketAddress(ipv4: host, port: port) {
      self = v4
    } else {
      do {
        self = try SocketAddress(ipv6: host, port: port)
      } catch {
        throw IOError("\(host) is neither an IPv4 nor an IPv6 address", EINVAL)
      }
    }
  }

  /// A Unix-domain socket path.
  public init(unixPath path: String) throws(IOError) {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
      throw IOError("unix path too long", ENAMETOOLONG)
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let length = MemoryLayout<sa_family_t>.size + bytes.count + 1
    storage = withUnsafeBytes(of: &address) { Array($0.prefix(length)) }
  }

  init(raw: UnsafeRawBufferPointer) { storage = Array(raw) }

  /// The address in a C `sockaddr` of `length` bytes (from getaddrinfo,
  /// getpeername, recvfrom...).
  /// - Throws: `IOError` with EAFNOSUPPORT for a family other than AF_INET,
  ///   AF_INET6 and AF_UNIX, or EINVAL when `length` is too short for it.
  public init(sockaddr address: UnsafePointer<sockaddr>, length: socklen_t) throws(IOError) {
    let raw = UnsafeRawBufferPointer(start: address, count: Int(length))
    guard raw.count >= MemoryLayout<sa_family_t>.size else { throw IOError("sockaddr of \(length) bytes", EINVAL) }
    let family = Int32(raw.loadUnaligned(as: sa_family_t.self))
    let needed: Int
    switch family {
    case AF_INET: needed = MemoryLayout<sockaddr_in>.size
    case AF_INET6: needed = MemoryLayout<sockaddr_in6>.size
    case AF_UNIX: needed = MemoryLayout<sa_family_t>.size
    default: throw IOError("sockaddr of family \(family)", EAFNOSUPPORT)
    }
    guard raw.count >= needed else { throw IOError("sockaddr of family \(family) in \(length) bytes", EINVAL) }
    self.init(raw: raw)
  }

  /// The same address with another port (unchanged unless ``isIP``).
  public func withPort(_ port: UInt16) -> SocketAddress {
    guard isIP else { return self }
    var copy = self
    copy.storage.withUnsafeMutableBytes { $0.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self) }
    return copy
  }

  /// The address family (AF_INET, AF_UNIX...).
  public var family: Int32 { storage.withUnsafeBytes { Int32($0.load(as: sa_family_t.self)) } }

  /// True for an IPv4 or IPv6 address.
  public var isIP: Bool { family == AF_INET || family == AF_INET6 }

  /// The numeric host of an IP address (`"127.0.0.1"`, `"::1"`,
  /// `"fe80::1%2"` with its scope), else nil.
  public var host: String? {
    switch family {
    case AF_INET:
      return storage[4..<8].map(String.init).joined(separator: ".")
    case AF_INET6:
      return storage.withUnsafeBytes { raw -> String in
        var address = raw.loadUnaligned(as: sockaddr_in6.self)
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(AF_INET6, &address.sin6_addr, &text, socklen_t(text.count))
        let numeric = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return address.sin6_scope_id == 0 ? numeric : numeric + "%\(address.sin6_scope_id)"
      }
    default:
      return nil
    }
  }

  /// The port of an IP address, else nil.
  public var port: UInt16? {
    guard isIP else { return nil }
    return storage.withUnsafeBytes { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
  }

  /// `HOST:PORT` for IPv4, `[HOST]:PORT` for IPv6, `unix:PATH` for a Unix-domain address.
  public var description: String {
    switch family {
    case AF_INET:
      return "\(host ?? "?"):\(port ?? 0)"
    case AF_INET6:
      return "[\(host ?? "?")]:\(port ?? 0)"
    case AF_UNIX:
      let path = storage.dropFirst(2).prefix { $0 != 0 }
      return "unix:" + String(decoding: path, as: UTF8.self)
    default:
      return "family \(family)"
    }
  }

  /// Lends the address to a C call.
  public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
    try storage.withUnsafeBytes { raw in
      try body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
    }
  }
}
