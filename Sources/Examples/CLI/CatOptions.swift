/// The options of `userproto cat`, parsed as nngcat 1.5.2 parses its own
/// (`nng_opts_parse`): a long option matches its full name or any prefix of
/// one name only (`--req` is `--req0`, `--re` is ambiguous), takes its value
/// from the next argument, after `=` or `:` (`--data=x`), or attached to a
/// short option (`-Dx`); the first argument that does not start with `-`
/// (or a lone `-`) ends the options and the rest is ignored. Then the same
/// checks as nngcat, in its order, with its messages.
///
/// A pure function of the arguments: the file of `--file` is read later, by
/// the command (nngcat reads it while parsing, so its open error can come
/// before a later option's error).
struct CatOptions: Sendable, Hashable {
  /// The SP protocol of the socket.
  enum Proto: Sendable, Hashable {
    case req0, rep0, pub0, sub0, push0, pull0, pair0, pair1, surveyor0, respondent0, bus0
  }

  /// Dial or listen.
  enum Mode: Sendable, Hashable { case dial, listen }

  /// One `--dial`/`--listen` (or one of their short forms), in order.
  struct Address: Sendable, Hashable {
    var mode: Mode
    var url: String
  }

  /// What a sender sends.
  enum Source: Sendable, Hashable {
    /// `--data`: the argument's bytes.
    case data([UInt8])
    /// `--file`: the file's bytes (`-`: standard input).
    case file(String)
  }

  /// `--verbose` or `--silent` (the last one given wins, as in nngcat).
  enum Verbosity: Sendable, Hashable { case normal, verbose, silent }

  var proto: Proto
  var addresses: [Address]
  /// nil: no format option given (received messages are not printed).
  var format: CatFormat?
  /// The SUB topics (`[""]`, everything, when none was given).
  var topics: [String] = []
  var verbosity = Verbosity.normal
  /// Messages to send or receive; 0: no limit.
  var count = 0
  /// Seconds before the first send.
  var delay = 0
  /// Seconds between sends; nil: send once.
  var interval: Int?
  /// Seconds a receive waits; nil (or 0): forever.
  var recvTimeout: Int?
  /// Seconds a send waits; nil (or 0): forever.
  var sendTimeout: Int?
  /// The largest message received, in bytes; nil: the default (1 MiB).
  var recvMaxSize: Int?
  var source: Source?
  var compat = false
  /// `--async`: dial in the background instead of failing when the first
  /// attempt fails.
  var async = false

  /// Why parsing stopped: a help or version request, or an nngcat error
  /// message (nngcat prints it on stderr and exits 1).
  enum Failure: Error, Sendable, Hashable, CustomStringConvertible {
    /// `--help`/`-h`: print ``CatOptions/help`` on stdout and exit 1.
    case help
    /// `--version`/`-V`: print ``CatOptions/version`` and exit 0.
    case version
    /// An error: print the message on stderr and exit 1.
    case fatal(String)

    var description: String {
      switch self {
      case .help: "help requested"
      case .version: "version requested"
      case .fatal(let message): message
      }
    }
  }

  /// The NNG version whose nngcat this command follows (what `-V` prints).
  static let version = "1.5.2"

  /// nngcat 1.5.2's `--help` text, word for word.
  static let help = """
    Usage: nngcat <proto> <addr>... [<fmt>] [<opts>...] [<src>]

    <proto> must be one of:
      --req0                 (or alias --req)
      --rep0                 (or alias --rep)
      --pub0                 (or alias --pub)
      --sub0                 (or alias --sub)
      --push0                (or alias --push)
      --pull0                (or alias --pull)
      --surveyor0            (or alias --surveyor)
      --respondent0          (or alias --respondent)
      --pair0
      --pair1
      --pair                 (alias for either pair0 or pair1)

    <addr> must be one or more of:
      --dial <url>           (or alias --connect <url>)
      --listen <url>         (or alias --bind <url>)
      --bind-local <port>    (or alias -L <port>)
      --connect-local <port> (or alias -l <port>)
      --bind-ipc <path>      (or alias -X <path>)
      --connect-ipc <path>   (or alias -x <path>)

    <fmt> may be one or none of:
      --format <no|ascii|hex|msgpack|quoted|raw>
      --ascii                (or alias -A)
      --quoted               (or alias -Q)
      --hex
      --msgpack
      --raw

    <opts> may be any of:
      --subscribe <topic>    (only with --sub protocol)
      --silent               (or alias -q)
      --verbose              (or alias -v)
      --count <num>          (or alias -C <num>)
      --delay <secs>         (or alias -d <secs>)
      --interval <secs>      (or alias -i <secs>)
      --recv-timeout <secs>
      --send-timeout <secs>
      --recv-maxsz <size>    (or alias -Z <size>)
      --compat
      --async
      --insecure             (or alias -k)
      --cacert <file>
      --cert <file>          (or alias -E <file>)
      --key <file>
      --zt-home <path>

    <src> may be one of:
      --file <file>          (or alias -F <file>). Use - for standard input.
      --data <data>          (or alias -D <data>)

    """

  /// Parses nngcat's arguments (without the program name).
  /// - Throws: ``Failure``.
  static func parse(_ arguments: [String]) throws(Failure) -> CatOptions {
    var proto: Proto?
    var addresses: [Address] = []
    var format: CatFormat?
    var topics: [String] = []
    var options = CatOptions(proto: .req0, addresses: [], format: nil)
    var dataGiven = false
    /// `--pair` was the protocol option: pair1, or pair0 with `--compat`.
    var pairAlias = false

    var index = 0
    while case let (option, value)? = try nextOption(arguments, &index) {
      switch option {
      case .help: throw .help
      case .version: throw .version
      case .proto(let p):
        if proto != nil { throw .fatal("Only one protocol may be specified.") }
        proto = p
      case .pair:
        if proto != nil { throw .fatal("Only one protocol may be specified.") }
        proto = .pair1
        pairAlias = true
      case .dial: addresses.append(Address(mode: .dial, url: value))
      case .listen: addresses.append(Address(mode: .listen, url: value))
      case .dialLocal, .listenLocal:
        let port = try integer(value, maximum: 65536)
        addresses.append(Address(mode: option == .dialLocal ? .dial : .listen, url: "tcp://127.0.0.1:\(port)"))
      case .dialIPC, .listenIPC:
        addresses.append(Address(mode: option == .dialIPC ? .dial : .listen, url: "ipc:///\(value)"))
      case .count: options.count = try integer(value, maximum: Int(Int32.max))
      case .subscribe: topics.append(value)
      case .verbose: options.verbosity = .verbose
      case .silent: options.verbosity = .silent
      case .delay: options.delay = try integer(value, maximum: 86400)
      case .interval: options.interval = try integer(value, maximum: 86400)
      case .sendTimeout: options.sendTimeout = try integer(value, maximum: 86400)
      case .recvTimeout: options.recvTimeout = try integer(value, maximum: 86400)
      case .recvMaxSize:
        let size = try integer(value, maximum: Int(Int32.max))
        options.recvMaxSize = size == 0 ? Int(Int32.max) : size
      case .compat: options.compat = true
      case .async: options.async = true
      case .format(let f):
        if format != nil { throw .fatal("Format may be specified only once.") }
        format = f
      case .formatNamed:
        if format != nil { throw .fatal("Format may be specified only once.") }
        guard let f = CatFormat(rawValue: value) else { throw .fatal("Invalid format specified.") }
        format = f
      case .data, .file:
        if dataGiven { throw .fatal("Data (--file, --data) may be specified only once.") }
        dataGiven = true
        options.source = option == .data ? .data(Array(value.utf8)) : .file(value)
      case .socketName:
        break  // nngcat accepts it and ignores it
      case .unsupported(let spelling):
        // TLS and ZeroTier: not in UserProto, so refused as options.
        throw .fatal("Option \(spelling) is invalid.")
      }
    }

    if addresses.isEmpty { throw .fatal("No address specified.") }
    if options.compat {
      if options.async { throw .fatal("Options --async and --compat are incompatible.") }
      if options.count != 0 { throw .fatal("Options --count and --compat are incompatible.") }
      if pairAlias { proto = .pair0 }
      if proto == .pair1 { throw .fatal("Protocol does not support --compat.") }
      options.async = true
    }
    if proto == .sub0 {
      if topics.isEmpty { topics = [""] }
    } else if !topics.isEmpty {
      throw .fatal("Protocol does not support --subscribe.")
    }
    switch proto {
    case .pull0, .sub0:
      if dataGiven { throw .fatal("Protocol does not support --file or --data.") }
      if options.interval != nil { throw .fatal("Protocol does not support --interval.") }
    case .push0, .pub0:
      if format != nil { throw .fatal("Protocol does not support --format options.") }
      if !dataGiven { throw .fatal("Protocol requires either --file or --data.") }
    case .surveyor0, .req0:
      if !dataGiven { throw .fatal("Protocol requires either --file or --data.") }
    case .rep0, .respondent0:
      if options.interval != nil { throw .fatal("Protocol does not support --interval.") }
    case .pair0, .pair1, .bus0:
      if options.interval != nil && !dataGiven {
        throw .fatal("Option --interval requires either --file or --data.")
      }
    case nil:
      break
    }
    guard let proto else { throw .fatal("No protocol specified.") }
    options.proto = proto
    options.addresses = addresses
    options.format = format
    options.topics = topics
    return options
  }

  // MARK: nng_opts_parse

  /// What an option means once matched.
  private enum Meaning: Hashable {
    case help, version, verbose, silent
    case proto(Proto)
    /// `--pair`: pair1, or pair0 in compat mode.
    case pair
    case dial, listen, dialLocal, listenLocal, dialIPC, listenIPC
    case data, file, subscribe, formatNamed
    case format(CatFormat)
    case compat, async, count, delay, interval, recvTimeout, sendTimeout, recvMaxSize, socketName
    /// Accepted by nngcat (TLS, ZeroTier), refused here.
    case unsupported(String)
  }

  private struct Spec {
    var name: String
    var short: Character?
    var meaning: Meaning
    var takesValue: Bool
  }

  /// nngcat 1.5.2's option table, in its order (the order decides nothing
  /// but is kept for reading side by side).
  private static let table: [Spec] = [
    Spec(name: "help", short: "h", meaning: .help, takesValue: false),
    Spec(name: "verbose", short: "v", meaning: .verbose, takesValue: false),
    Spec(name: "silent", short: "q", meaning: .silent, takesValue: false),
    Spec(name: "req0", meaning: .proto(.req0), takesValue: false),
    Spec(name: "rep0", meaning: .proto(.rep0), takesValue: false),
    Spec(name: "push0", meaning: .proto(.push0), takesValue: false),
    Spec(name: "pull0", meaning: .proto(.pull0), takesValue: false),
    Spec(name: "pub0", meaning: .proto(.pub0), takesValue: false),
    Spec(name: "sub", meaning: .proto(.sub0), takesValue: false),
    Spec(name: "sub0", meaning: .proto(.sub0), takesValue: false),
    Spec(name: "surveyor0", meaning: .proto(.surveyor0), takesValue: false),
    Spec(name: "respondent0", meaning: .proto(.respondent0), takesValue: false),
    // nngcat documents `--pair` as pair1 (pair0 with `--compat`), and
    // that is what it is here; nngcat 1.5.2 itself ignores the option (its
    // protocol switch has no case for it: "No protocol specified.").
    Spec(name: "pair", meaning: .pair, takesValue: false),
    Spec(name: "pair0", meaning: .proto(.pair0), takesValue: false),
    Spec(name: "pair1", meaning: .proto(.pair1), takesValue: false),
    Spec(name: "bus0", meaning: .proto(.bus0), takesValue: false),
    Spec(name: "dial", meaning: .dial, takesValue: true),
    Spec(name: "listen", meaning: .listen, takesValue: true),
    Spec(name: "data", short: "D", meaning: .data, takesValue: true),
    Spec(name: "file", short: "F", meaning: .file, takesValue: true),
    Spec(name: "subscribe", meaning: .subscribe, takesValue: true),
    Spec(name: "format", meaning: .formatNamed, takesValue: true),
    Spec(name: "ascii", short: "A", meaning: .format(.ascii), takesValue: false),
    Spec(name: "quoted", short: "Q", meaning: .format(.quoted), takesValue: false),
    Spec(name: "raw", meaning: .format(.raw), takesValue: false),
    Spec(name: "hex", meaning: .format(.hex), takesValue: false),
    Spec(name: "compat", meaning: .compat, takesValue: false),
    Spec(name: "async", meaning: .async, takesValue: false),
    Spec(name: "msgpack", meaning: .format(.msgpack), takesValue: false),
    Spec(name: "recv-maxsz", short: "Z", meaning: .recvMaxSize, takesValue: true),
    Spec(name: "count", short: "C", meaning: .count, takesValue: true),
    Spec(name: "delay", short: "d", meaning: .delay, takesValue: true),
    Spec(name: "interval", short: "i", meaning: .interval, takesValue: true),
    Spec(name: "recv-timeout", meaning: .recvTimeout, takesValue: true),
    Spec(name: "send-timeout", meaning: .sendTimeout, takesValue: true),
    Spec(name: "socket-name", meaning: .socketName, takesValue: true),
    Spec(name: "bind", meaning: .listen, takesValue: true),
    Spec(name: "connect", meaning: .dial, takesValue: true),
    Spec(name: "bind-ipc", short: "X", meaning: .listenIPC, takesValue: true),
    Spec(name: "connect-ipc", short: "x", meaning: .dialIPC, takesValue: true),
    Spec(name: "bind-local", short: "L", meaning: .listenLocal, takesValue: true),
    Spec(name: "connect-local", short: "l", meaning: .dialLocal, takesValue: true),
    Spec(name: "insecure", short: "k", meaning: .unsupported(""), takesValue: false),
    Spec(name: "cacert", meaning: .unsupported(""), takesValue: true),
    Spec(name: "key", meaning: .unsupported(""), takesValue: true),
    Spec(name: "cert", short: "E", meaning: .unsupported(""), takesValue: true),
    Spec(name: "zt-home", meaning: .unsupported(""), takesValue: true),
    Spec(name: "version", short: "V", meaning: .version, takesValue: false),
  ]

  /// The option at `index` and its value ("" for a flag), advancing
  /// `index`; nil at the end of the options.
  private static func nextOption(_ arguments: [String], _ index: inout Int) throws(Failure) -> (Meaning, String)? {
    guard index < arguments.count else { return nil }
    let argument = arguments[index]
    let bytes = Array(argument.utf8)
    guard bytes.first == UInt8(ascii: "-") else { return nil }
    guard bytes.count > 1 else {
      index += 1
      return nil
    }
    let spec: Spec
    // The value in the same argument: after `=` or `:` for a long option
    // (possibly empty), after the letter for a short one; nil when none.
    let attached: ArraySlice<UInt8>?
    if bytes[1] == UInt8(ascii: "-") {
      let body = bytes[2...]
      let nameEnd = body.firstIndex(where: { $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: ":") }) ?? body.endIndex
      let name = body[..<nameEnd]
      var matches = 0
      var found: Spec?
      for candidate in table where Array(candidate.name.utf8).starts(with: name) {
        matches += 1
        found = candidate
        if candidate.name.utf8.count == name.count {
          matches = 1
          break
        }
      }
      guard let found, matches == 1 else {
        if matches == 0 { throw .fatal("Option \(argument) is invalid.") }
        throw .fatal("Option \(argument) is ambiguous (specify in full).")
      }
      spec = found
      attached = nameEnd == body.endIndex ? nil : body[(nameEnd + 1)...]
    } else {
      let letter = bytes[1]
      guard let found = table.first(where: { $0.short?.asciiValue == letter }) else {
        throw .fatal("Option \(argument) is invalid.")
      }
      spec = found
      attached = bytes.count > 2 ? bytes[2...] : nil
    }
    let meaning: Meaning
    if case .unsupported = spec.meaning { meaning = .unsupported(argument) } else { meaning = spec.meaning }
    guard spec.takesValue else {
      // No clustering of short flags (`-qv`), no value for a flag.
      if attached != nil { throw .fatal("Option \(argument) is invalid.") }
      index += 1
      return (meaning, "")
    }
    if let attached {
      index += 1
      return (meaning, String(decoding: attached, as: UTF8.self))
    }
    guard index + 1 < arguments.count else { throw .fatal("Option \(argument) requires argument.") }
    index += 2
    return (meaning, arguments[index - 1])
  }

  /// nngcat's `intarg`: decimal digits only, refused as soon as the value
  /// passes `maximum` (so `12x` with a maximum of 10 is "too large").
  /// (nngcat's int arithmetic can wrap on long inputs and accept them;
  /// this one cannot.)
  private static func integer(_ text: String, maximum: Int) throws(Failure) -> Int {
    if text.isEmpty { throw .fatal("Empty integer argument.") }
    var value = 0
    for byte in text.utf8 {
      guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
        throw .fatal("Integer argument expected.")
      }
      value = value * 10 + Int(byte - UInt8(ascii: "0"))
      if value > maximum { throw .fatal("Integer argument too large.") }
    }
    return value
  }
}
