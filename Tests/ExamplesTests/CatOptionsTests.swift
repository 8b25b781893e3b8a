import TestSupport
import Testing

@testable import Examples

/// `userproto cat`'s argument parser against nngcat 1.5.2's: every alias,
/// the value forms of nng_opts_parse, and nngcat's error messages (each
/// one observed by running nngcat 1.5.2 with the same arguments).
@Suite("userproto cat: nngcat's options", .timeLimit(.minutes(2)), .testThreads)
struct CatOptionsTests {
  private func parse(_ arguments: [String]) throws -> CatOptions { try CatOptions.parse(arguments) }

  /// The failure `arguments` give, nil when they parse.
  private func failure(_ arguments: [String]) -> CatOptions.Failure? {
    do throws(CatOptions.Failure) {
      _ = try CatOptions.parse(arguments)
      return nil
    } catch {
      return error
    }
  }

  private let url = "tcp://127.0.0.1:5555"

  static let protocolOptions: [(String, CatOptions.Proto)] = [
    ("--req0", .req0), ("--req", .req0), ("--rep0", .rep0), ("--rep", .rep0),
    ("--pub0", .pub0), ("--pub", .pub0), ("--sub0", .sub0), ("--sub", .sub0), ("--push0", .push0),
    ("--push", .push0), ("--pull0", .pull0), ("--pull", .pull0), ("--surveyor0", .surveyor0),
    ("--surveyor", .surveyor0), ("--surv", .surveyor0), ("--respondent0", .respondent0),
    ("--respondent", .respondent0), ("--pair0", .pair0), ("--pair1", .pair1), ("--pair", .pair1),
    ("--bus0", .bus0), ("--bus", .bus0),
  ]

  @Test("each protocol option and its alias (a unique prefix, as nng_opts_parse takes)", arguments: protocolOptions)
  func protocols(option: String, proto: CatOptions.Proto) throws {
    let sender: Set<CatOptions.Proto> = [.req0, .pub0, .push0, .surveyor0]
    let data = sender.contains(proto) ? ["-D", "x"] : []
    let options = try parse([option, "--dial", url] + data)
    #expect(options.proto == proto)
  }

  /// nngcat 1.5.2 documents `--pair` as pair1, or pair0 with `--compat`,
  /// and ignores it (observed: "No protocol specified."); ours does what
  /// the documentation says.
  @Test("--pair is pair1, and pair0 with --compat (which also turns --async on and refuses --pair1)")
  func pairWithCompat() throws {
    let plain = try parse(["--pair", "--dial", url])
    #expect(plain.proto == .pair1 && !plain.async)
    let compat = try parse(["--pair", "--compat", "--dial", url])
    #expect(compat.proto == .pair0)
    #expect(compat.async)
    #expect(failure(["--pair1", "--compat", "--dial", url]) == .fatal("Protocol does not support --compat."))
    #expect(failure(["--pair", "--pair1", "--dial", url]) == .fatal("Only one protocol may be specified."))
  }

  @Test("addresses: every form, repeatable, in order")
  func addresses() throws {
    let options = try parse([
      "--pull0", "--dial", "tcp://a:1", "--connect", "tcp://b:2", "--listen", "tcp://*:3", "--bind", "ipc:///tmp/s",
      "-L", "4", "--bind-local", "5", "-l", "6", "--connect-local=7", "-X", "/tmp/x", "--bind-ipc", "rel",
      "-x", "/tmp/y", "--connect-ipc", "z", "--dial=tcp://c:8",
    ])
    typealias A = CatOptions.Address
    #expect(
      options.addresses == [
        A(mode: .dial, url: "tcp://a:1"), A(mode: .dial, url: "tcp://b:2"), A(mode: .listen, url: "tcp://*:3"),
        A(mode: .listen, url: "ipc:///tmp/s"), A(mode: .listen, url: "tcp://127.0.0.1:4"),
        A(mode: .listen, url: "tcp://127.0.0.1:5"), A(mode: .dial, url: "tcp://127.0.0.1:6"),
        A(mode: .dial, url: "tcp://127.0.0.1:7"),
        // nngcat writes "ipc:///" before the path, whatever it is.
        A(mode: .listen, url: "ipc:////tmp/x"), A(mode: .listen, url: "ipc:///rel"),
        A(mode: .dial, url: "ipc:////tmp/y"), A(mode: .dial, url: "ipc:///z"), A(mode: .dial, url: "tcp://c:8"),
      ])
  }

  static let formatOptions: [([String], CatFormat)] = [
    (["--format", "no"], .no), (["--format", "ascii"], .ascii), (["--format", "hex"], .hex),
    (["--format", "msgpack"], .msgpack), (["--format", "quoted"], .quoted), (["--format", "raw"], .raw),
    (["--format=hex"], .hex), (["--ascii"], .ascii), (["-A"], .ascii), (["--quoted"], .quoted), (["-Q"], .quoted),
    (["--hex"], .hex), (["--msgpack"], .msgpack), (["--raw"], .raw),
  ]

  @Test("formats: --format VALUE and every alias", arguments: formatOptions)
  func formats(arguments: [String], format: CatFormat) throws {
    #expect(try parse(["--pull0", "--dial", url] + arguments).format == format)
  }

  @Test("no format option: none (nngcat then prints nothing)")
  func noFormat() throws {
    #expect(try parse(["--pull0", "--dial", url]).format == nil)
  }

  @Test("numbers, timeouts, data and flags in their long, short, = and attached forms")
  func values() throws {
    let options = try parse([
      "--req0", "-l", "1", "-C", "3", "--delay", "2", "-i", "1", "--recv-timeout", "5", "--send-timeout=6",
      "-Z", "100", "-v", "--async", "-Dhello",
    ])
    #expect(options.count == 3)
    #expect(options.delay == 2)
    #expect(options.interval == 1)
    #expect(options.recvTimeout == 5)
    #expect(options.sendTimeout == 6)
    #expect(options.recvMaxSize == 100)
    #expect(options.verbosity == .verbose)
    #expect(options.async)
    #expect(options.source == .data(Array("hello".utf8)))

    let other = try parse(["--req0", "-l", "1", "--count:4", "-d1", "--recv-maxsz", "0", "-q", "--data", "-x"])
    #expect(other.count == 4)
    #expect(other.delay == 1)
    #expect(other.recvMaxSize == Int(Int32.max))  // 0: no limit, as nngcat
    #expect(other.verbosity == .silent)
    #expect(other.source == .data(Array("-x".utf8)))  // a value may start with a dash
    #expect(other.interval == nil)
    #expect(!other.async)

    #expect(try parse(["--push0", "-l", "1", "-F", "-"]).source == .file("-"))
    #expect(try parse(["--push0", "-l", "1", "--file=/tmp/f"]).source == .file("/tmp/f"))
    #expect(try parse(["--push0", "-l", "1", "--data="]).source == .data([]))
  }

  @Test("--subscribe is repeatable; a SUB with none subscribes to everything")
  func subscribe() throws {
    #expect(try parse(["--sub", "--dial", url, "--subscribe", "a", "--subscribe=b"]).topics == ["a", "b"])
    #expect(try parse(["--sub0", "--dial", url]).topics == [""])
  }

  @Test("the first argument that is not an option ends the options; the rest is ignored (nng_opts_parse)")
  func positionalEndsOptions() throws {
    let options = try parse(["--pull0", "--dial", url, "extra", "--bogus", "-D", "x"])
    #expect(options.source == nil)
    #expect(try parse(["--pull0", "--dial", url, "-", "--bogus"]).proto == .pull0)
  }

  @Test("--help and -h, --version and -V")
  func helpAndVersion() {
    #expect(failure(["--help"]) == .help)
    #expect(failure(["--req0", "-h"]) == .help)
    #expect(failure(["--version"]) == .version)
    #expect(failure(["-V"]) == .version)
    #expect(CatOptions.help.hasPrefix("Usage: nngcat <proto> <addr>... [<fmt>] [<opts>...] [<src>]\n\n"))
    #expect(CatOptions.help.hasSuffix("  --data <data>          (or alias -D <data>)\n"))
  }

  /// Each observed from nngcat 1.5.2 (stderr, exit status 1) with the same
  /// arguments, except where a comment says otherwise.
  static let badInputs: [([String], String)] = [
    (["--req0"], "No address specified."),
    (["--req0", "--dial", "foo"], "Protocol requires either --file or --data."),
    (["--count", "x"], "Integer argument expected."),
    (["--req0", "--dial", "tcp://127.0.0.1:1", "--count", "x"], "Integer argument expected."),
    (["--bogus"], "Option --bogus is invalid."),
    (["--req0", "--dial"], "Option --dial requires argument."),
    (["--pull0", "--dial", "tcp://127.0.0.1:1", "--subscribe", "a"], "Protocol does not support --subscribe."),
    (["--sub0", "--dial", "tcp://127.0.0.1:1", "-D", "x"], "Protocol does not support --file or --data."),
    (["--pull0", "--dial", "tcp://127.0.0.1:1", "-i", "1"], "Protocol does not support --interval."),
    (["--bus0", "--dial", "tcp://127.0.0.1:1", "-i", "1"], "Option --interval requires either --file or --data."),
    (["--req0", "--req0"], "Only one protocol may be specified."),
    (["--req0", "--rep0"], "Only one protocol may be specified."),
    (["--dial", "tcp://127.0.0.1:1"], "No protocol specified."),
    (["--push0", "--dial", "tcp://127.0.0.1:1"], "Protocol requires either --file or --data."),
    (["--re", "--dial", "x"], "Option --re is ambiguous (specify in full)."),
    (["--format", "bad"], "Invalid format specified."),
    (["--hex", "--ascii"], "Format may be specified only once."),
    (["-C", ""], "Empty integer argument."),
    (["-d", "-1"], "Integer argument expected."),
    (["-L", "70000"], "Integer argument too large."),
    (["--tls-cert", "x"], "Option --tls-cert is invalid."),
    (["-D", "a", "-D", "b"], "Data (--file, --data) may be specified only once."),
    (["--recv-maxsz", "x"], "Integer argument expected."),
    (["-Z", "10"], "No address specified."),
    (
      ["--req0", "--dial", "tcp://127.0.0.1:1", "-D", "x", "--data=y"],
      "Data (--file, --data) may be specified only once."
    ),
    (["--pull0", "-l", "1", "--recv-timeout", "x"], "Integer argument expected."),
    (["--push0", "--dial", "tcp://127.0.0.1:1", "-D", "x", "-Q"], "Protocol does not support --format options."),
    // From nngcat 1.5.2's source (nngcat.c, nng_opts_parse), not run:
    (["-qv"], "Option -qv is invalid."),
    (["--hex=1"], "Option --hex=1 is invalid."),
    (["--"], "Option -- is ambiguous (specify in full)."),
    (["--pair", "--compat", "--async", "-l", "1"], "Options --async and --compat are incompatible."),
    (["--pair", "--compat", "-C", "1", "-l", "1"], "Options --count and --compat are incompatible."),
    (["--pair1", "--compat", "-l", "1"], "Protocol does not support --compat."),
    // Ours: TLS and ZeroTier are not in UserProto, so their options are
    // refused as unknown ones (nngcat would load the files).
    (["--cert", "x"], "Option --cert is invalid."),
    (["-k"], "Option -k is invalid."),
    (["--zt-home", "x"], "Option --zt-home is invalid."),
    // nngcat's int arithmetic wraps here and it goes on to "No address
    // specified."; ours refuses the value.
    (["-C", "99999999999"], "Integer argument too large."),
  ]

  @Test("bad input: nngcat's message", arguments: badInputs)
  func badInput(arguments: [String], message: String) {
    #expect(failure(arguments) == .fatal(message), "\(arguments)")
  }

  @Test("a port of 65536 is accepted by -L, as nngcat's intarg does (the listen then fails)")
  func portLimit() throws {
    let addresses = try parse(["--pull0", "-L", "65536"]).addresses
    #expect(addresses == [CatOptions.Address(mode: .listen, url: "tcp://127.0.0.1:65536")])
  }
}
