import CFuzzResolver
import ExampleProtocols
import FuzzSupport
import Glibc
import UserProto

// SP URL parsing: the input, as text, through `TransportURL` (for dialing
// and for listening) and `SPAddress.parse`, with host names resolved by
// the fake resolver of CFuzzResolver (never DNS). Each result must be what
// the syntax says: the scheme's family, the same address again from its
// own text, a dialer's URL also a listener's, a lookup of exactly the
// host that was written, and the two parsers agreeing where both accept.

@_cdecl("LLVMFuzzerTestOneInput")
public func urlFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  let url = String(decoding: fuzzBytes(data, size), as: UTF8.self)
  let dial = lookingUp { parse(url, .dial) }
  let listen = lookingUp { parse(url, .listen) }
  check(url, dial, .dial)
  check(url, listen, .listen)
  if case .success(let parsed) = dial.result {
    fuzzCheck(listen.result == .success(parsed), "dials as \(parsed), listens as \(listen.result): \(url)")
  } else if case .success = listen.result, case .failure(.badAddress(_, let why)) = dial.result {
    fuzzCheck(why.contains("wildcard"), "listens but does not dial, not for a wildcard: \(why): \(url)")
  }
  checkSPAddress(url, listen.result)
  return 0
}

/// A parse, and the host name the resolver was asked for during it (nil
/// when it was not asked).
struct Parsed<T> {
  var result: T
  var lookedUp: [UInt8]?
}

func lookingUp<T>(_ body: () -> T) -> Parsed<T> {
  let before = cfuzz_resolver_calls()
  let result = body()
  guard cfuzz_resolver_calls() != before else { return Parsed(result: result, lookedUp: nil) }
  var buffer = [CChar](repeating: 0, count: 65536)
  let length = min(cfuzz_resolver_last_name(&buffer, buffer.count), buffer.count - 1)
  return Parsed(result: result, lookedUp: buffer.prefix(length).map { UInt8(bitPattern: $0) })
}

func parse(_ url: String, _ purpose: TransportURL.Purpose) -> Result<TransportURL, SocketError> {
  do throws(SocketError) {
    return .success(try TransportURL(url, for: purpose))
  } catch {
    return .failure(error)
  }
}

/// The scheme (lowercased, as `TransportURL` takes it) and what follows
/// `://`; nil without `://`.
func split(_ url: String) -> (scheme: String, rest: String)? {
  let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
  guard parts.count == 2 else { return nil }
  return (parts[0].lowercased(), String(parts[1]))
}

/// What the fake resolver's names resolve to, per scheme ("": the name
/// has no address of the scheme's family; nil: not a name it knows). For
/// `tcp://` and `udp://` the IPv4 address wins, though the resolver lists
/// `::1` first.
func resolved(_ name: String, scheme: String) -> String? {
  let table: [String: [String: String]] = [
    "localhost": ["tcp": "127.0.0.1", "udp": "127.0.0.1", "tcp4": "127.0.0.1", "tcp6": "::1"],
    "v4only.test": ["tcp": "192.0.2.1", "udp": "192.0.2.1", "tcp4": "192.0.2.1", "tcp6": ""],
    "v6only.test": ["tcp": "2001:db8::1", "udp": "2001:db8::1", "tcp4": "", "tcp6": "2001:db8::1"],
  ]
  return table[name]?[scheme]
}

func check(_ url: String, _ parsed: Parsed<Result<TransportURL, SocketError>>, _ purpose: TransportURL.Purpose) {
  let parts = split(url)
  if let name = parsed.lookedUp {
    // The host is everything between `://` and the port's colon: the
    // resolver must have been asked for exactly that, not a part of it.
    let rest = parts?.rest ?? ""
    let host = rest.lastIndex(of: ":").map { String(rest[..<$0]) } ?? rest
    fuzzCheck(
      name == Array(host.utf8),
      "looked up \(String(decoding: name, as: UTF8.self).debugDescription) for the host \(host.debugDescription)")
  }
  switch parsed.result {
  case .failure(let error):
    guard case .badAddress(let text, let why) = error else {
      fuzzCheck(false, "a bad URL must be a badAddress error: \(error)")
      return
    }
    fuzzCheck(text == url && !why.isEmpty, "the error names the URL and why: \(error)")
  case .success(let address):
    guard let (scheme, rest) = parts else {
      fuzzCheck(false, "\(url.debugDescription) parsed without ://")
      return
    }
    checkScheme(scheme, rest, address, url)
    if case .tcp = address, rest.utf8.contains(0) {
      // C sees a host up to its first NUL byte: "1.2.3.4\0.example" must
      // not pass for 1.2.3.4.
      fuzzCheck(false, "a host with a NUL byte parsed: \(url.debugDescription) as \(address)")
    }
    if case .udp = address, rest.utf8.contains(0) {
      fuzzCheck(false, "a host with a NUL byte parsed: \(url.debugDescription) as \(address)")
    }
    if let name = parsed.lookedUp, case .tcp(let socketAddress) = address, let host = socketAddress.host,
      let expected = resolved(String(decoding: name, as: UTF8.self), scheme: scheme)
    {
      fuzzCheck(host == expected, "\(url) resolved to \(host), expected \(expected.isEmpty ? "no address" : expected)")
    }
    fuzzCheck(
      (SPFraming(for: address) == .ipc) == { if case .ipc = address { true } else { false } }(),
      "the SP framing of \(address)")
    // Its own text gives the same address back (an ipc:// path with a NUL
    // byte prints only up to it).
    if case .ipc(let socketAddress) = address, socketAddress.description.utf8.count != rest.utf8.count + 5 {
      return
    }
    fuzzCheck(parse(address.description, purpose) == .success(address), "\(address) does not parse back")
  }
}

func checkScheme(_ scheme: String, _ rest: String, _ address: TransportURL, _ url: String) {
  let ip = [AF_INET, AF_INET6]
  switch (scheme, address) {
  case ("tcp", .tcp(let a)), ("udp", .udp(let a)): fuzzCheck(ip.contains(a.family), "\(url): family \(a.family)")
  case ("tcp4", .tcp(let a)): fuzzCheck(a.family == AF_INET, "\(url): family \(a.family)")
  case ("tcp6", .tcp(let a)): fuzzCheck(a.family == AF_INET6, "\(url): family \(a.family)")
  case ("ipc", .ipc(let a)): fuzzCheck(a.family == AF_UNIX && !rest.isEmpty, "\(url): \(a)")
  case ("inproc", .inproc(let name)): fuzzCheck(name == rest && !name.isEmpty, "\(url): name \(name)")
  default: fuzzCheck(false, "the scheme \(scheme) gave \(address)")
  }
}

/// `SPAddress.parse`, the first design's: the family its scheme says, its
/// own URL back, and the same address as `TransportURL` where both parse.
func checkSPAddress(_ url: String, _ transport: Result<TransportURL, SocketError>) {
  let parsed = lookingUp { () -> Result<SocketAddress, SPAddressError> in
    do throws(SPAddressError) {
      return .success(try SPAddress.parse(url))
    } catch {
      return .failure(error)
    }
  }
  if let name = parsed.lookedUp, let rest = split(url)?.rest {
    let host = rest.lastIndex(of: ":").map { String(rest[..<$0]) } ?? rest
    fuzzCheck(
      name == Array(host.utf8),
      "SPAddress looked up \(String(decoding: name, as: UTF8.self).debugDescription) for \(host.debugDescription)")
  }
  switch parsed.result {
  case .failure(let error):
    fuzzCheck(error.url == url && !error.reason.isEmpty, "the error names the URL and why: \(error)")
  case .success(let address):
    let family: [Int32] =
      url.hasPrefix("tcp4://")
      ? [AF_INET] : url.hasPrefix("tcp6://") ? [AF_INET6] : url.hasPrefix("ipc://") ? [AF_UNIX] : [AF_INET, AF_INET6]
    fuzzCheck(family.contains(address.family), "SPAddress \(url): family \(address.family)")
    let text = SPAddress.url(for: address)
    if address.family != AF_UNIX || text.utf8.count == url.utf8.count {
      fuzzCheck((try? SPAddress.parse(text)) == address, "SPAddress \(address) does not parse back from \(text)")
    }
    switch transport {
    case .success(.tcp(let other)), .success(.ipc(let other)):
      fuzzCheck(other == address, "SPAddress gives \(address), TransportURL \(other): \(url.debugDescription)")
    default:
      break
    }
  }
}
