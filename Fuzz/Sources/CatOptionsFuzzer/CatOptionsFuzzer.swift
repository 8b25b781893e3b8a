import FuzzSupport

// `userproto cat`'s option parser, nngcat's rules (CatOptions.swift) and
// its output formats (CatFormat.swift). Both files live in the `userproto`
// executable target, which no other target can import, and depend on
// nothing but the standard library: this target compiles the same two
// files through symlinks to Sources/Examples/CLI, so what is fuzzed is
// what ships.
//
// The first byte picks the mode: an argument vector of any bytes (split
// at NUL, as /proc/PID/cmdline), options spelled in every form nngcat
// takes, or a message through every output format.

@_cdecl("LLVMFuzzerTestOneInput")
public func catOptionsFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(fuzzBytes(data, size))
  switch input.byte() % 3 {
  case 0:
    let pieces = input.rest().split(separator: 0, omittingEmptySubsequences: false)
    checkArguments(pieces.map { String(decoding: $0, as: UTF8.self) })
  case 1:
    checkSpellings(&input)
  default:
    checkFormats(input.rest())
  }
  return 0
}

typealias Outcome = Result<CatOptions, CatOptions.Failure>

func outcome(_ arguments: [String]) -> Outcome {
  do throws(CatOptions.Failure) {
    return .success(try CatOptions.parse(arguments))
  } catch {
    return .failure(error)
  }
}

/// Any argument vector: what parses is consistent and reads back from its
/// own spelling; options end at the first argument that is not one.
func checkArguments(_ arguments: [String]) {
  let result = outcome(arguments)
  if case .success(let options) = result {
    checkConsistent(options, arguments)
    let canonical = spell(options)
    fuzzCheck(outcome(canonical) == result, "\(arguments) parses as \(options), its spelling \(canonical) does not")
  }
  // Unless the last option lacked its value, nothing after a non-option
  // argument (or a lone "-") changes the outcome.
  if case .failure(.fatal(let message)) = result, message.hasSuffix("requires argument.") { return }
  for stop in ["-", "file", ""] {
    let longer = arguments + [stop, "--pub0", "--bogus", "-D"]
    fuzzCheck(
      outcome(longer) == result, "\(arguments) then \(stop.debugDescription): \(outcome(longer)), not \(result)")
  }
}

/// What every accepted set of options must satisfy (nngcat's checks).
func checkConsistent(_ o: CatOptions, _ arguments: [String]) {
  let context = "\(arguments) -> \(o)"
  fuzzCheck(!o.addresses.isEmpty, "no address: \(context)")
  fuzzCheck(o.proto == .sub0 ? !o.topics.isEmpty : o.topics.isEmpty, "topics: \(context)")
  if o.compat { fuzzCheck(o.async && o.count == 0 && o.proto != .pair1, "compat: \(context)") }
  switch o.proto {
  case .pull0, .sub0: fuzzCheck(o.source == nil && o.interval == nil, "a receiver with a source: \(context)")
  case .push0, .pub0: fuzzCheck(o.format == nil && o.source != nil, "a sender: \(context)")
  case .req0, .surveyor0: fuzzCheck(o.source != nil, "a requester without data: \(context)")
  case .rep0, .respondent0: fuzzCheck(o.interval == nil, "a replier with an interval: \(context)")
  case .pair0, .pair1, .bus0: fuzzCheck(o.interval == nil || o.source != nil, "an interval without data: \(context)")
  }
  let day = 0...86400
  fuzzCheck((0...Int(Int32.max)).contains(o.count) && day.contains(o.delay), "count or delay: \(context)")
  for value in [o.interval, o.recvTimeout, o.sendTimeout] {
    if let value { fuzzCheck(day.contains(value), "a time of \(value): \(context)") }
  }
  if let size = o.recvMaxSize { fuzzCheck((1...Int(Int32.max)).contains(size), "recv-maxsz \(size): \(context)") }
}

/// The options spelled out again, one long option each with its value
/// after `=`.
func spell(_ o: CatOptions) -> [String] {
  let names: [CatOptions.Proto: String] = [
    .req0: "req0", .rep0: "rep0", .pub0: "pub0", .sub0: "sub0", .push0: "push0", .pull0: "pull0",
    .pair0: "pair0", .pair1: "pair1", .surveyor0: "surveyor0", .respondent0: "respondent0", .bus0: "bus0",
  ]
  var arguments = ["--" + (names[o.proto] ?? "")]
  for address in o.addresses { arguments.append((address.mode == .dial ? "--dial=" : "--listen=") + address.url) }
  if let format = o.format { arguments.append("--format=" + format.rawValue) }
  if o.proto == .sub0 { for topic in o.topics { arguments.append("--subscribe=" + topic) } }
  switch o.verbosity {
  case .verbose: arguments.append("--verbose")
  case .silent: arguments.append("--silent")
  case .normal: break
  }
  if o.count != 0 { arguments.append("--count=\(o.count)") }
  if o.delay != 0 { arguments.append("--delay=\(o.delay)") }
  if let interval = o.interval { arguments.append("--interval=\(interval)") }
  if let timeout = o.recvTimeout { arguments.append("--recv-timeout=\(timeout)") }
  if let timeout = o.sendTimeout { arguments.append("--send-timeout=\(timeout)") }
  if let size = o.recvMaxSize { arguments.append("--recv-maxsz=\(size)") }
  switch o.source {
  case .data(let bytes): arguments.append("--data=" + String(decoding: bytes, as: UTF8.self))
  case .file(let path): arguments.append("--file=" + path)
  case nil: break
  }
  if o.compat { arguments.append("--compat") } else if o.async { arguments.append("--async") }
  return arguments
}

// MARK: Spellings

/// What an option's value is made of.
enum ValueKind { case url, integer, text, format }

/// nngcat 1.5.2's options, as its `--help` lists them (written out here,
/// not read from the parser, so the two are checked against each other).
let optionTable: [(name: String, short: Character?, value: ValueKind?)] = [
  ("help", "h", nil), ("verbose", "v", nil), ("silent", "q", nil), ("req0", nil, nil), ("rep0", nil, nil),
  ("push0", nil, nil), ("pull0", nil, nil), ("pub0", nil, nil), ("sub", nil, nil), ("sub0", nil, nil),
  ("surveyor0", nil, nil), ("respondent0", nil, nil), ("pair", nil, nil), ("pair0", nil, nil),
  ("pair1", nil, nil), ("bus0", nil, nil), ("dial", nil, .url), ("listen", nil, .url), ("data", "D", .text),
  ("file", "F", .text), ("subscribe", nil, .text), ("format", nil, .format), ("ascii", "A", nil),
  ("quoted", "Q", nil), ("raw", nil, nil), ("hex", nil, nil), ("compat", nil, nil), ("async", nil, nil),
  ("msgpack", nil, nil), ("recv-maxsz", "Z", .integer), ("count", "C", .integer), ("delay", "d", .integer),
  ("interval", "i", .integer), ("recv-timeout", nil, .integer), ("send-timeout", nil, .integer),
  ("socket-name", nil, .text), ("bind", nil, .url), ("connect", nil, .url), ("bind-ipc", "X", .text),
  ("connect-ipc", "x", .text), ("bind-local", "L", .integer), ("connect-local", "l", .integer),
  ("insecure", "k", nil), ("cacert", nil, .text), ("key", nil, .text), ("cert", "E", .text),
  ("zt-home", nil, .text), ("version", "V", nil),
]

/// The shortest prefix of `name` that no other option's name starts with
/// (the name itself when it is a prefix of another one).
func uniquePrefix(_ name: String) -> String {
  for length in 1..<name.count {
    let prefix = String(name.prefix(length))
    if !optionTable.contains(where: { $0.name != name && $0.name.hasPrefix(prefix) }) { return prefix }
  }
  return name
}

/// A value of `kind` from the input: a telling one from a list, or any text.
func value(_ kind: ValueKind, _ input: inout FuzzInput) -> String {
  let telling: [String] =
    switch kind {
    case .url: ["tcp://127.0.0.1:5555", "ipc:///tmp/cat", "tcp://*:0", "inproc://cat", "", "-x"]
    case .integer: ["0", "1", "65536", "65537", "86400", "86401", "2147483647", "2147483648", "", "12x", "-1"]
    case .text: ["", "-", "x", "=", ":", "--data", "a=b:c"]
    case .format: ["no", "ascii", "hex", "msgpack", "quoted", "raw", "bogus", ""]
    }
  return input.bool() ? input.pick(telling) : String(decoding: input.blob(maximum: 24), as: UTF8.self)
}

/// One option in one of the forms nngcat takes: the full long name or
/// its shortest unique prefix, the value in the next argument or after
/// `=` or `:`, or the short letter with the value attached or next.
func spell(_ option: (name: String, short: Character?, value: ValueKind?), _ value: String?, style: Int) -> [String] {
  let long = style % 2 == 0 ? option.name : uniquePrefix(option.name)
  if let short = option.short, style >= 4 {
    guard let value else { return ["-\(short)"] }
    return style == 4 && !value.isEmpty ? ["-\(short)\(value)"] : ["-\(short)", value]
  }
  guard let value else { return ["--" + long] }
  switch style {
  case 1: return ["--\(long)=\(value)"]
  case 2: return ["--\(long):\(value)"]
  default: return ["--" + long, value]
  }
}

/// The same options in two spellings parse the same, and what follows a
/// non-option argument is ignored.
func checkSpellings(_ input: inout FuzzInput) {
  var plain: [String] = []
  var styled: [String] = []
  for _ in 0..<input.int(in: 0...12) {
    let option = input.pick(optionTable)
    let text = option.value.map { value($0, &input) }
    plain += spell(option, text, style: 0)
    styled += spell(option, text, style: input.int(in: 0...5))
  }
  let expected = outcome(plain)
  fuzzCheck(
    normalized(outcome(styled)) == normalized(expected),
    "\(styled) gives \(outcome(styled)), \(plain) gives \(expected)")
  if case .success(let options) = expected { checkConsistent(options, plain) }
  let stop = input.pick(["-", "stop", ""])
  let junk = String(decoding: input.rest(), as: UTF8.self).split(separator: " ").map(String.init)
  fuzzCheck(outcome(plain + [stop] + junk) == expected, "\(plain) then \(stop.debugDescription) and \(junk)")
}

/// An outcome without the spelling an error message quotes ("Option
/// --cert is invalid." says it as typed).
func normalized(_ outcome: Outcome) -> Outcome {
  if case .failure(.fatal(let message)) = outcome, message.hasPrefix("Option "), message.hasSuffix(" is invalid.") {
    return .failure(.fatal("Option <as typed> is invalid."))
  }
  return outcome
}

// MARK: Formats

/// Every output format on `message`: nngcat's byte-for-byte shapes.
func checkFormats(_ message: [UInt8]) {
  let n = message.count
  for format in CatFormat.allCases {
    let out = format.render(message)
    switch format {
    case .no: fuzzCheck(out.isEmpty, "no: \(out)")
    case .raw: fuzzCheck(out == message, "raw")
    case .ascii:
      fuzzCheck(out.count == n && out.allSatisfy { (0x20...0x7E).contains($0) }, "ascii: \(out)")
      fuzzCheck(zip(message, out).allSatisfy { $0 == $1 || $1 == UInt8(ascii: ".") }, "ascii keeps printable bytes")
    case .hex:
      fuzzCheck(out.count == 4 * n + 3 && out.first == UInt8(ascii: "\"") && out.suffix(2) == [0x22, 0x0A], "hex")
    case .quoted:
      fuzzCheck(out.first == UInt8(ascii: "\"") && out.suffix(2) == [0x22, 0x0A] && out.count >= n + 3, "quoted")
      fuzzCheck(unquote(Array(out.dropFirst().dropLast(2))) == message, "quoted does not read back: \(out)")
    case .msgpack:
      let (kind, width): (UInt8, Int) = n < 256 ? (0xC4, 1) : n < 65536 ? (0xC5, 2) : (0xC6, 4)
      let length = out.dropFirst().prefix(width).reduce(0) { $0 << 8 | Int($1) }
      fuzzCheck(out.first == kind && length == n && Array(out.dropFirst(1 + width)) == message, "msgpack")
    }
  }
}

/// The inverse of the quoted format's escapes.
func unquote(_ text: [UInt8]) -> [UInt8]? {
  var out: [UInt8] = []
  var i = 0
  func hex(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
    default: nil
    }
  }
  while i < text.count {
    guard text[i] == UInt8(ascii: "\\") else {
      out.append(text[i])
      i += 1
      continue
    }
    guard i + 1 < text.count else { return nil }
    switch text[i + 1] {
    case UInt8(ascii: "n"): out.append(0x0A)
    case UInt8(ascii: "r"): out.append(0x0D)
    case UInt8(ascii: "t"): out.append(0x09)
    case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(text[i + 1])
    case UInt8(ascii: "x"):
      guard i + 3 < text.count, let high = hex(text[i + 2]), let low = hex(text[i + 3]) else { return nil }
      out.append(high << 4 | low)
      i += 2
    default: return nil
    }
    i += 2
  }
  return out
}
