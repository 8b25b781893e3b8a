import FuzzSupport
import Glibc
import UserProto

// Socket address parsing, both ways in: a C sockaddr of any bytes and
// length (what getaddrinfo, accept and recvfrom hand over), and the text
// initializers. Each result must keep its bytes, print as its family
// says, survive a port change, and parse back from its own text; each
// refusal must name the reason the docs give. inet_pton is the reference
// for numeric text.

@_cdecl("LLVMFuzzerTestOneInput")
public func socketAddressFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(fuzzBytes(data, size))
  let port = input.integer(UInt16.self)
  switch input.int(in: 0...1) {
  case 0: checkSockaddr(input.rest(), port: port)
  default: checkText(String(decoding: input.rest(), as: UTF8.self), port: port)
  }
  return 0
}

/// A `sockaddr` of these bytes, as long as they are.
func checkSockaddr(_ bytes: [UInt8], port: UInt16) {
  let result = bytes.withUnsafeBytes { raw -> Result<SocketAddress, IOError> in
    // An 8-byte aligned copy, as the kernel's and getaddrinfo's are.
    let storage = UnsafeMutableRawPointer.allocate(byteCount: max(raw.count, 1), alignment: 8)
    defer { storage.deallocate() }
    if let base = raw.baseAddress { storage.copyMemory(from: base, byteCount: raw.count) }
    do throws(IOError) {
      return .success(
        try SocketAddress(sockaddr: storage.assumingMemoryBound(to: sockaddr.self), length: socklen_t(raw.count)))
    } catch {
      return .failure(error)
    }
  }
  let family = bytes.count >= 2 ? Int32(UInt16(bytes[0]) | UInt16(bytes[1]) << 8) : -1
  let needed: Int? =
    switch family {
    case AF_INET: MemoryLayout<sockaddr_in>.size
    case AF_INET6: MemoryLayout<sockaddr_in6>.size
    case AF_UNIX: 2
    default: nil
    }
  switch result {
  case .failure(let error):
    if bytes.count < 2 {
      fuzzCheck(error.code == EINVAL, "\(bytes.count) bytes: \(error)")
    } else if let needed {
      fuzzCheck(error.code == EINVAL && bytes.count < needed, "family \(family) in \(bytes.count) bytes: \(error)")
    } else {
      fuzzCheck(error.code == EAFNOSUPPORT, "family \(family): \(error)")
    }
  case .success(let address):
    fuzzCheck(needed.map { bytes.count >= $0 } == true, "family \(family) taken in \(bytes.count) bytes")
    fuzzCheck(address.family == family, "family \(address.family), the bytes say \(family)")
    let lent = address.withSockaddr { pointer, length in
      Array(UnsafeRawBufferPointer(start: pointer, count: Int(length)))
    }
    fuzzCheck(lent == bytes, "the address lends other bytes than it was made of")
    checkAddress(address, port: port)
  }
}

/// What every address must do: print, change its port, and come back from
/// its own text.
func checkAddress(_ address: SocketAddress, port: UInt16) {
  let description = address.description
  let moved = address.withPort(port)
  let bytes = address.withSockaddr { p, n in Array(UnsafeRawBufferPointer(start: p, count: Int(n))) }
  let movedBytes = moved.withSockaddr { p, n in Array(UnsafeRawBufferPointer(start: p, count: Int(n))) }
  guard address.isIP else {
    fuzzCheck(moved == address && address.port == nil && address.host == nil, "\(description) has no port or host")
    if address.family == AF_UNIX {
      // Bytes, not characters: a path may start with a combining mark.
      fuzzCheck(description.utf8.starts(with: "unix:".utf8), "a Unix-domain address prints as \(description)")
      // The path as text (invalid UTF-8 repaired, as the description does).
      let path = String(decoding: bytes.dropFirst(2).prefix { $0 != 0 }, as: UTF8.self)
      if path.utf8.count < 108 {
        let again = try? SocketAddress(unixPath: path)
        fuzzCheck(again?.description == description, "\(description) does not come back from its path")
      }
    }
    return
  }
  fuzzCheck(moved.port == port, "withPort(\(port)) gave port \(String(describing: moved.port))")
  var expectedBytes = bytes
  expectedBytes[2] = UInt8(port >> 8)
  expectedBytes[3] = UInt8(port & 0xFF)
  fuzzCheck(movedBytes == expectedBytes, "withPort(\(port)) changed more than the port")
  guard let host = address.host, let original = address.port else {
    fuzzCheck(false, "an IP address without host or port: \(description)")
    return
  }
  let expected = address.family == AF_INET ? "\(host):\(original)" : "[\(host)]:\(original)"
  fuzzCheck(description == expected, "\(description), expected \(expected)")
  // The numeric text comes back as the same host and port (the bytes need
  // not: sin_zero, flow info).
  guard let again = try? SocketAddress(ip: host, port: original) else {
    fuzzCheck(false, "\(host) does not parse back")
    return
  }
  fuzzCheck(
    again.family == address.family && again.host == host && again.port == original,
    "\(description) came back as \(again)")
}

/// The text initializers against inet_pton.
func checkText(_ text: String, port: UInt16) {
  let v4 = try? SocketAddress(ipv4: text, port: port)
  let v6 = try? SocketAddress(ipv6: text, port: port)
  let either = try? SocketAddress(ip: text, port: port)
  let unix = try? SocketAddress(unixPath: text)
  // C would read the text only up to a NUL byte; a text with one is not an address.
  let clean = !text.utf8.contains(0)
  var in4 = in_addr()
  var in6 = in6_addr()
  fuzzCheck(
    (v4 != nil) == (clean && inet_pton(AF_INET, text, &in4) == 1),
    "ipv4 \(text.debugDescription): \(String(describing: v4))")
  if !text.contains("%") {
    fuzzCheck(
      (v6 != nil) == (clean && inet_pton(AF_INET6, text, &in6) == 1),
      "ipv6 \(text.debugDescription): \(String(describing: v6))")
  } else if v6 != nil {
    fuzzCheck(clean, "ipv6 with a zone and a NUL byte: \(text.debugDescription)")
  }
  fuzzCheck(
    either == (v4 ?? v6),
    "ip \(text.debugDescription): \(String(describing: either)), v4 \(String(describing: v4)), v6 \(String(describing: v6))"
  )
  if let v4 {
    fuzzCheck(v4.family == AF_INET && v4.port == port, "ipv4 \(text): \(v4)")
    checkAddress(v4, port: port &+ 1)
  }
  if let v6 {
    fuzzCheck(v6.family == AF_INET6 && v6.port == port, "ipv6 \(text): \(v6)")
    checkAddress(v6, port: port &+ 1)
  }
  let length = text.utf8.count
  fuzzCheck((unix != nil) == (length < 108), "a Unix path of \(length) bytes: \(String(describing: unix))")
  if let unix {
    let expected = "unix:" + String(decoding: text.utf8.prefix { $0 != 0 }, as: UTF8.self)
    fuzzCheck(unix.family == AF_UNIX && unix.description == expected, "unix \(text.debugDescription): \(unix)")
    let size = unix.withSockaddr { _, n in Int(n) }
    fuzzCheck(size == 2 + length + 1, "a Unix path of \(length) bytes in a sockaddr of \(size)")
    checkAddress(unix, port: port)
  }
}
