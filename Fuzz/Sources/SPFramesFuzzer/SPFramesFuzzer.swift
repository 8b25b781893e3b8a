import ExampleProtocols
import FuzzSupport
import UserProto

// The SP header and frame decoders of every pattern, fed by a peer that
// writes what the input says, in chunks the input cuts, over an in-memory
// pipe (SP/TCP framing, or SP/IPC's on an `ipc://` pipe). What the socket
// delivers, drops, counts and fails is compared with a model of the SP
// RFCs written out here (SPStreamModel.swift); the pure decoders are
// checked against the same model on the raw input (DecoderChecks.swift).

@_cdecl("LLVMFuzzerTestOneInput")
public func spFramesFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  let bytes = fuzzBytes(data, size)
  checkDecoders(bytes)
  var input = FuzzInput(bytes)
  let config = readConfig(&input)
  let tokens = readTokens(&input, config)
  let script = LoopScript()  // starts the fuzz loop on the first input, before the count
  let descriptors = openDescriptorCount()
  script.run {
    // Header timers an hour away: no input runs that long, and finishing
    // the socket cancels them.
    let hour = Duration.seconds(3600)
    switch config.pattern {
    case .pull: NewRun(Pull0Handler(headerTimeout: hour), config, tokens, script).start()
    case .bus: NewRun(Bus0Handler(headerTimeout: hour), config, tokens, script).start()
    case .pair: NewRun(Pair0Handler(headerTimeout: hour), config, tokens, script).start()
    case .sub:
      NewRun(Sub0Handler(subscriptions: config.subscriptions, headerTimeout: hour), config, tokens, script).start()
    case .push: NewRun(Push0Handler(headerTimeout: hour), config, tokens, script).start()
    case .pub: NewRun(Pub0Handler(headerTimeout: hour), config, tokens, script).start()
    case .rep:
      let handler = Rep0Handler(ttl: config.ttl, maximumUnansweredRequests: config.unansweredLimit, headerTimeout: hour)
      NewRun(handler, config, tokens, script).start()
    case .respondent:
      let handler = Respondent0Handler(
        ttl: config.ttl, maximumUnansweredSurveys: config.unansweredLimit, headerTimeout: hour)
      NewRun(handler, config, tokens, script).start()
    case .req: NewRun(Req0Handler(resendInterval: hour, headerTimeout: hour), config, tokens, script).start()
    case .surveyor: NewRun(Surveyor0Handler(surveyTime: hour, headerTimeout: hour), config, tokens, script).start()
    case .pair1: NewRun(Pair1Handler(ttl: config.ttl, headerTimeout: hour), config, tokens, script).start()
    }
  }
  fuzzCheck(
    openDescriptorCount() == descriptors, "descriptors leaked: \(descriptors) before, \(openDescriptorCount()) after")
  return 0
}

// MARK: The input

/// The pattern, framing, limits and pattern settings, from the first bytes.
func readConfig(_ input: inout FuzzInput) -> StreamConfig {
  let pattern = input.pick(Pattern.allCases)
  let flags = input.byte()
  // Int.max: no limit at all (a length near Int.max must not overflow).
  let limits = [1 << 20, 16, 300, Int.max]
  var config = StreamConfig(
    pattern: pattern, ipc: flags & 1 != 0, limit: limits[Int(flags >> 1 & 3)], ttl: input.int(in: 0...16),
    unansweredLimit: input.pick([1024, 1, 2, 5]), subscriptions: [], ends: flags & 8 != 0)
  if pattern == .sub {
    for _ in 0..<input.int(in: 0...3) { config.subscriptions.append(input.blob(maximum: 4)) }
  }
  return config
}

/// What the peer does, one step each.
enum Token {
  /// Writes bytes, in two writes when `cut` falls inside them.
  case write([UInt8], cut: Int)
  /// Writes a reply (or answer) frame to the latest request (or survey)
  /// the peer received: its id, then `body`.
  case reply([UInt8], cut: Int)
  /// The application sends (REQ: a request; SURVEYOR: a survey).
  case send([UInt8])
  /// Lets the loop run `hops` more tasks before the next token.
  case settle(Int)
}

func readTokens(_ input: inout FuzzInput, _ config: StreamConfig) -> [Token] {
  let header = SPWire.header(config.pattern.ids.peer)
  var tokens: [Token] = []
  while !input.isExhausted && tokens.count < 256 {
    let kind = input.int(in: 0...10)
    var bytes: [UInt8]
    switch kind {
    case 0:
      bytes = input.blob(maximum: 64)
    case 1:
      bytes = header
    case 2:
      // The right header with one byte changed (or none, for 0).
      bytes = header
      bytes[input.int(in: 0...7)] ^= input.byte()
    case 3:
      bytes = SPWire.frame(input.blob(maximum: 200), ipc: config.ipc)
    case 4:
      // A prefix whose length need not be the body's.
      let lengths: [UInt64] = [0, 1, 15, 16, 17, 299, 300, 301, 1 << 20, UInt64(Int.max) - 8, UInt64(Int.max), .max]
      let length = input.bool() ? input.pick(lengths) : input.integer(UInt64.self)
      bytes = SPWire.prefix(length: length, ipc: config.ipc) + input.blob(maximum: 64)
    case 5:
      // An IPC frame with any message type byte.
      let body = input.blob(maximum: 32)
      bytes = [input.byte()] + SPWire.prefix(length: UInt64(body.count), ipc: false) + body
    case 6:
      // A request as devices forward it: hop words, the id, the body.
      var message: [UInt8] = []
      for _ in 0..<input.int(in: 0...10) { message += SPWire.word(input.integer(UInt32.self) & 0x7FFF_FFFF) }
      message += SPWire.word(input.integer(UInt32.self) | 0x8000_0000)
      bytes = SPWire.frame(message + input.blob(maximum: 32), ipc: config.ipc)
    case 10:
      // A PAIR v1 message: a hop count near the limits, then the body.
      let counts: [UInt32] = [0, 1, 7, 8, 9, 15, 16, 0xFF, 0x100, 0x0100_0001, .max]
      let hops = input.bool() ? input.pick(counts) : input.integer(UInt32.self)
      bytes = SPWire.frame(SPWire.word(hops) + input.blob(maximum: 32), ipc: config.ipc)
    case 7:
      tokens.append(.reply(input.blob(maximum: 32), cut: Int(input.byte())))
      continue
    case 8:
      tokens.append(.send(input.blob(maximum: 32)))
      continue
    default:
      tokens.append(.settle(input.int(in: 0...16)))
      continue
    }
    tokens.append(.write(bytes, cut: Int(input.byte())))
  }
  return tokens
}

/// Writes `bytes` through `peer`, in two writes when `cut` falls inside.
func writeChunked(_ bytes: [UInt8], cut: Int, to peer: MemoryPeer) {
  let at = bytes.isEmpty ? 0 : cut % (bytes.count + 1)
  if at == 0 || at == bytes.count {
    peer.write(bytes)
  } else {
    peer.write(Array(bytes[..<at]))
    peer.write(Array(bytes[at...]))
  }
}

/// The options every socket here gets: the configured message size limit,
/// and a receive queue large enough never to pause reading (the model
/// reads the whole stream; pausing is the handler target's business).
func options(_ config: StreamConfig) -> SocketOptions {
  SocketOptions(
    receiveHighWatermark: 1 << 40, receiveLowWatermark: 1 << 39, maximumMessageSize: config.limit)
}

// MARK: The second design: Socket<Handler>

/// One stream through a `Socket<H>`, as a chain of loop steps.
final class NewRun<H: FuzzedHandler> {
  private let config: StreamConfig
  private let tokens: [Token]
  private let script: LoopScript
  private let socket: Socket<H>
  private var peer: MemoryPeer?
  /// Descriptors without close-on-exec before the socket was made: every
  /// one made since must have it.
  private let baselineWithoutCloseOnExec: Set<Int32>

  init(_ handler: sending H, _ config: StreamConfig, _ tokens: [Token], _ script: LoopScript) {
    self.config = config
    self.tokens = tokens
    self.script = script
    baselineWithoutCloseOnExec = Set(descriptorsWithoutCloseOnExec())
    do {
      socket = try Socket(handler, loop: fuzzLoop, options: options(config))
    } catch {
      fatalError("a socket cannot be made: \(error)")
    }
  }

  /// On the loop: attaches the peer and runs the tokens.
  func start() {
    _ = socket.fileDescriptor  // the mask fd follows the state from now on
    let url: TransportURL
    do {
      url = config.ipc ? .ipc(try SocketAddress(unixPath: "/fuzz/sp.sock")) : .inproc("fuzz-sp")
    } catch {
      fatalError("\(error)")
    }
    peer = MemoryPeer.attach(to: socket, url: url)
    let fresh = Set(descriptorsWithoutCloseOnExec()).subtracting(baselineWithoutCloseOnExec)
    fuzzCheck(fresh.isEmpty, "descriptors without close-on-exec: \(fresh.sorted())")
    step(0)
  }

  private func step(_ index: Int) {
    guard let peer else { return }
    guard index < tokens.count else {
      if config.ends { peer.shutdownWrite() }
      settle(rounds: 0, last: nil)
      return
    }
    var hops = 1
    switch tokens[index] {
    case .write(let bytes, let cut):
      writeChunked(bytes, cut: cut, to: peer)
    case .reply(let body, let cut):
      let requests = SPWire.parse(peer.received, ipc: config.ipc).messages
      let id = requests.last.flatMap { SPWire.word(in: $0, at: 0) } ?? 0x8000_0000
      writeChunked(SPWire.frame(SPWire.word(id) + body, ipc: config.ipc), cut: cut, to: peer)
    case .send(let body):
      // Only the requesters' sends matter to what is read back; REP's and
      // RESPONDENT's would answer requests and change their limits.
      if config.pattern.sendsIDs { _ = try? socket.trySend(body) }
    case .settle(let count):
      hops = count
    }
    script.after(hops: hops) { [self] in step(index + 1) }
  }

  /// Lets the loop run until nothing visible changes for a round of 8
  /// tasks (what a step sets off is a chain of a few tasks at most).
  private func settle(rounds: Int, last: String?) {
    guard let peer else { return }
    let now = "\(peer.received.count) \(peer.sawEnd) \(socket.statistics) \(probe(socket))"
    if now == last || rounds >= 64 {
      verify()
      return
    }
    script.after(hops: 8) { [self] in settle(rounds: rounds + 1, last: now) }
  }

  private func verify() {
    guard let peer else { return }
    let expected = expectation(of: peer.written, config)
    var received: [[UInt8]] = []
    while case .message(let message)? = try? socket.tryReceive() { received.append(message) }
    probe(socket).check("after the stream")
    checkAccounting(socket, "after the stream")
    let statistics = socket.statistics
    let counters: Counters
    do {
      counters = try socket.withHandlerAndWait { handler, _ in handler.counters }
    } catch {
      fatalError("the handler cannot be reached: \(error)")
    }
    let (own, _) = config.pattern.ids
    let context = "\(config.pattern), ipc \(config.ipc), limit \(config.limit), ends \(config.ends)"

    fuzzCheck(
      peer.received.starts(with: SPWire.header(own)), "the socket's header: \(peer.received.prefix(8)), \(context)")
    if let failure = expected.failure {
      fuzzCheck(
        statistics.pipeFailures == 1 && counters.failures.last?.contains(failure.text) == true,
        "the pipe must fail (\(failure.text)): \(statistics), \(counters.failures), \(context)")
    } else {
      fuzzCheck(statistics.pipeFailures == 0, "the pipe must not fail: \(counters.failures), \(context)")
      fuzzCheck(
        statistics.pipes == (expected.closedCleanly ? 0 : 1)
          && statistics.pipesRemoved == (expected.closedCleanly ? 1 : 0),
        "the pipe must be \(expected.closedCleanly ? "closed" : "up"): \(statistics), \(context)")
    }
    switch config.pattern {
    case .req, .surveyor:
      checkRequester(expected, received, counters, statistics, context)
    default:
      fuzzCheck(received == expected.delivered, "delivered \(received), expected \(expected.delivered), \(context)")
      fuzzCheck(
        counters.delivered == expected.delivered.count && counters.dropped == expected.dropped
          && counters.overLimit == expected.overLimit,
        "counters \(counters), expected \(expected.delivered.count) delivered, \(expected.dropped) dropped, "
          + "\(expected.overLimit) over the limit, \(context)")
    }
    tearDown()
  }

  /// REQ and SURVEYOR: which replies are delivered depends on the id
  /// awaited when each was parsed, so the checks are those that hold
  /// whatever the timing: every reply parsed is delivered or ignored,
  /// every delivered one answers an id the socket sent, in order, and the
  /// application got each delivered one unless a newer send abandoned it.
  private func checkRequester(
    _ expected: Expectation, _ received: [[UInt8]], _ counters: Counters, _ statistics: SocketStatistics,
    _ context: String
  ) {
    guard let peer else { return }
    let sent = SPWire.parse(peer.received, ipc: config.ipc).messages.compactMap { SPWire.word(in: $0, at: 0) }
    fuzzCheck(sent.allSatisfy { $0 & 0x8000_0000 != 0 }, "an id without the high bit: \(sent), \(context)")
    if config.pattern == .req {
      for (a, b) in zip(sent, sent.dropFirst()) {
        fuzzCheck(b == (a &+ 1) | 0x8000_0000, "request ids \(a) then \(b), \(context)")
      }
    }
    fuzzCheck(
      counters.delivered + counters.ignored == expected.replies.count,
      "\(expected.replies.count) replies parsed, counted \(counters), \(context)")
    fuzzCheck(
      received.count + statistics.staleDrops + counters.dropped == counters.delivered,
      "received \(received.count), stale \(statistics.staleDrops), counted \(counters), \(context)")
    let answers = expected.replies.filter { sent.contains($0.id) }.map(\.body)
    var remaining = answers[...]
    for message in received {
      guard let index = remaining.firstIndex(of: message) else {
        fuzzCheck(false, "delivered \(message), not a reply to a sent id in order: \(answers), \(context)")
        return
      }
      remaining = remaining[(index + 1)...]
    }
  }

  private func tearDown() {
    finishNow(socket)
    peer?.close()
    peer = nil
    fuzzCheck(isFinished(socket), "the socket did not finish")
    script.after(hops: 4) { [self] in script.finish() }
  }
}
