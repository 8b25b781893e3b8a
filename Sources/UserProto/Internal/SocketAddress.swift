public import Glibc

/// An IPv4, IPv6 or Unix-domain socket address.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
  var storage: [UInt8]

  /// An IPv4 address and port, e.g. `SocketAddress(ipv4: "127.0.0.1", port: 5555)`.
  public init(ipv4 host: String, port: UInt16) throws(IOError) {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw IOError("inet_pton(\(host))", EINVAL) }
    storage = withUnsafeBytes(of: &address) { Array($0) }
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

  /// The address family (AF_INET, AF_UNIX...).
  public var family: Int32 { storage.withUnsafeBytes { Int32($0.load(as: sa_family_t.self)) } }

  /// The port of an IP address, else nil.
  public var port: UInt16? {
    guard family == AF_INET || family == AF_INET6 else { return nil }
    return storage.withUnsafeBytes { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
  }

  public var description: String {
    switch family {
    case AF_INET:
      let bytes = storage[4..<8]
      return "\(bytes.map(String.init).joined(separator: ".")):\(port ?? 0)"
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
