public import UserProto

/// An SP socket in raw mode (NNG's `nng_<protocol>_open_raw`): the SP
/// header of each message is handed to the application and taken from it,
/// untouched, instead of being kept by the socket. For devices
/// (``SPDevice``), and for servers that answer out of order.
///
/// One handler type serves every pattern; its `Role` (``SPRaw``, or the
/// aliases ``RawReq0Handler``, ``RawRep0Handler``...) says which. Messages
/// are `[UInt8]` as on a cooked socket, the header first and the body after
/// it; ``SPMessage`` splits and joins them. What each role does, as NNG's
/// raw protocols do:
///
/// | role | delivers | a send |
/// |---|---|---|
/// | REP, RESPONDENT | the receiving pipe's id (31 bits, high bit clear), then the request's backtrace and body as received | the first 4 bytes name the pipe (dropped, counted, when it has gone or cannot take it); the rest goes to it |
/// | REQ, SURVEYOR | every reply or answer, backtrace included; no id is matched | goes as given: no id added, no resend, no deadline; REQ to one pipe (round robin, waits while none can take it), SURVEYOR to every pipe |
/// | BUS | the receiving pipe's id, then the message | the first 4 bytes name the sender (0: none); the rest goes to every pipe but that one |
/// | PAIR v1 | the hop count, then the body | the hop count (below 0xff) is incremented on the way out |
/// | SUB | every message: no subscriptions, no filter | (SUB sends nothing) |
/// | PUB, PUSH, PULL, PAIR v0 | as the cooked handlers: these have no header | as the cooked handlers |
///
/// Each device hop therefore grows a request's backtrace by one word (its
/// front REP's pipe id), and the reply retraces it word by word. Hops are
/// limited by ``ttl`` where NNG limits them: a REP or RESPONDENT backtrace
/// longer than it, or a PAIR v1 hop count above it, is dropped (counted in
/// ``Statistics/overTTL``) and the pipe stays. A reply or answer without a
/// word carrying the high bit, a request without one within its length,
/// or a malformed PAIR v1 hop count fails its pipe only (NNG closes it).
/// A send too short for the header its role routes by is refused at the
/// call (`validateSend`: `SocketError.protocolViolation(_:)`), as NNG's
/// raw PAIR v1 refuses it with NNG_EPROTO.
///
/// Raw REQ and SURVEYOR keep no request state, so a send never abandons
/// earlier replies (`sendCancelsReceive` is false): a device has many
/// requests in flight on one socket.
///
/// ```swift
/// let front = try Socket(RawRep0Handler(), loop: loop)
/// try front.listen("tcp://*:5555")
/// for try await bytes in front.messages {
///   guard let request = SPMessage(bytes, for: .rep0) else { continue }
///   try await front.send(SPMessage(header: request.header, body: request.body.reversed()).bytes)
/// }
/// ```
public final class SPRawHandler<Role: SPRawRole>: SocketHandler {
  /// False for the roles that only receive (SUB, PULL): a send throws `SocketError.notSupported(_:)`.
  public static var sendsMessages: Bool { Role.protocolID.canSend }

  /// Refuses a send too short for the header its role routes by: REP,
  /// RESPONDENT and BUS need the 4-byte pipe id in front, PAIR v1 its
  /// 4-byte hop count, below 0xff. The others send any bytes as given.
  /// - Throws: `SocketError.protocolViolation(_:)`; nothing is queued then.
  public static func validateSend(_ message: [UInt8]) throws(SocketError) {
    let id = Role.protocolID
    switch id {
    case .rep0, .respondent0, .bus0:
      guard message.count >= 4 else {
        throw .protocolViolation(
          "a raw \(id.name) message starts with its header's 4-byte pipe id; this one has \(message.count) bytes")
      }
    case .pair1:
      guard message.count >= 4 else {
        throw .protocolViolation(
          "a raw PAIR v1 message starts with its 4-byte hop count; this one has \(message.count) bytes")
      }
      let hops = SPMessage.word(message, at: 0)
      guard hops < Pair1Handler.largestHopCount else {
        throw .protocolViolation(
          "a raw PAIR v1 hop count of 0x\(String(hops, radix: 16)) cannot go one hop further (NNG: NNG_EPROTO)")
      }
    case .req0, .surveyor0, .pub0, .sub0, .push0, .pull0, .pair0:
      return
    }
  }

  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// The most hops a received message may have come through
  /// (NNG_OPT_MAXTTL; NNG's default is 8, and it accepts 1 to 15; values
  /// below 1 count as 1): the words of a REP or RESPONDENT backtrace, a
  /// PAIR v1 hop count. Unused by the other roles (NNG's raw REQ and
  /// SURVEYOR take the option and do not use it either). A change applies
  /// from the next message parsed.
  public var ttl: Int

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages delivered to the application, header included.
    public var delivered = 0
    /// Frames written to pipes: one per routed, load-balanced or paired
    /// send, one per pipe a fan-out (SURVEYOR, PUB, BUS) reached.
    public var copiesSent = 0
    /// Copies dropped because their pipe could not take them (a fan-out's
    /// stalled pipe, a routed reply's stalled requester) or was going.
    public var drops = 0
    /// Routed sends (REP, RESPONDENT) whose pipe id names no pipe of this
    /// socket (it has gone): dropped, as NNG drops them.
    public var unroutable = 0
    /// Sends that had to wait because no pipe could take them when they
    /// were first offered (REQ, PUSH, PAIR), each counted once.
    public var heldBack = 0
    /// Received messages dropped for coming through more than
    /// ``SPRawHandler/ttl`` hops; their pipe stayed.
    public var overTTL = 0
    /// Received messages whose header was malformed (a backtrace with no
    /// word carrying the high bit, a PAIR v1 hop count cut short or above
    /// 0xff); each failed its pipe.
    public var malformedMessages = 0
    /// Sends too short for their header that reached the loop (none
    /// should: `validateSend` refuses them at the call); dropped.
    public var malformedSends = 0
    /// Messages received by a role that receives nothing (PUB, PUSH): dropped.
    public var ignoredMessages = 0
    /// Pipes a PAIR socket refused because it was paired already.
    public var refusedPipes = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// The pipe a PAIR socket is paired with, once its handshake completed
  /// (always nil for the other roles).
  public private(set) var peer: SocketPipe?

  /// Per pipe id (`SocketPipe.id`): the 31-bit id put in headers.
  private var headerIDs: [UInt64: UInt32] = [:]
  /// Per 31-bit header id: its pipe.
  private var pipesByHeaderID: [UInt32: SocketPipe] = [:]
  /// Where the round robin over ``SPPipes/ready`` starts next (REQ, PUSH).
  private var cursor = 0
  /// True while the first queued message waits for a pipe (so it is
  /// counted in ``Statistics/heldBack`` once).
  private var holding = false

  /// A raw handler of `Role` dropping (and counting) messages that came
  /// through more than `ttl` hops, where the role counts hops; a pipe whose
  /// peer sends no SP header within `headerTimeout` fails.
  public init(ttl: Int = 8, headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    self.ttl = ttl
    pipes = SPPipes(Role.protocolID, peer: Role.protocolID.peer, headerTimeout: headerTimeout)
  }

  /// The 31-bit id this socket puts in headers for `pipe` (REP, RESPONDENT
  /// and BUS deliver it in front of what the pipe sent), once its handshake
  /// completed; nil before that and once it has gone. Unique in the process.
  public func headerID(of pipe: SocketPipe) -> UInt32? { headerIDs[pipe.id] }

  /// The pipe a header's pipe id names, while it is up.
  public func pipe(headerID: UInt32) -> SocketPipe? { pipesByHeaderID[headerID] }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers each message with its header as the role reads it (see the table above); a PAIR refuses a newer pipe while paired.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    // A refused PAIR pipe is failed by throwing once parsing returns:
    // closing it from inside would release the input being parsed.
    var refusal: SocketError?
    try pipes.received(
      &input, from: pipe, context: context,
      handshake: { pipe in refusal = handshakeCompleted(pipe, context: context) }
    ) { (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      try receive(&input, length: length, from: pipe, context: context)
    }
    if let refusal { throw refusal }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe and its header id (a reply routed to it later is dropped, counted); a PAIR's place is freed.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    pipes.removed(pipe, error: error)
    if let id = headerIDs.removeValue(forKey: pipe.id) { pipesByHeaderID[id] = nil }
    if peer === pipe { peer = nil }
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Sends the message as the role routes it (see the table above): REQ, PUSH and PAIR wait while no pipe can
  /// take it; the others never wait.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    switch Role.protocolID {
    case .req0, .push0:
      return sendToNextPipe(message)
    case .surveyor0, .pub0:
      broadcast(message, excluding: nil)
      return .taken
    case .bus0:
      guard message.count >= 4 else {
        statistics.malformedSends += 1
        return .taken
      }
      // The sender's id (0: none) says which pipe must not get it back.
      let sender = SPMessage.word(message, at: 0)
      broadcast(Array(message[4...]), excluding: pipesByHeaderID[sender])
      return .taken
    case .rep0, .respondent0:
      route(message)
      return .taken
    case .pair0:
      return sendToPeer(header: [], message)
    case .pair1:
      guard message.count >= 4, SPMessage.word(message, at: 0) < Pair1Handler.largestHopCount else {
        statistics.malformedSends += 1
        return .taken
      }
      // One hop more on the way out (NNG's pair1_pipe_send).
      let hops = SPMessage.word(message, at: 0) + 1
      return sendToPeer(header: SPBacktrace.word(hops), Array(message[4...]))
    case .sub0, .pull0:
      return .taken  // never offered: the socket refuses their sends (sendsMessages is false)
    }
  }

  // MARK: Internals

  /// `pipe` completed its handshake: it gets its header id and, on a PAIR,
  /// becomes the peer, or, when there is one already, returns the reason
  /// it is refused.
  private func handshakeCompleted(_ pipe: SocketPipe, context: SocketContext) -> SocketError? {
    if Role.protocolID.isPair {
      if let current = peer, current !== pipe {
        statistics.refusedPipes += 1
        return .notSupported(
          "raw PAIR takes one peer at a time and is paired with \(current); the newer pipe is refused (NNG: NNG_EBUSY)")
      }
      peer = pipe
    }
    assignHeaderID(to: pipe)
    try? context.resumeSends()  // a send waiting for a ready pipe (REQ, PUSH, PAIR) can go now
    return nil
  }

  /// `pipe`'s header id, given now if it has none yet.
  @discardableResult
  private func assignHeaderID(to pipe: SocketPipe) -> UInt32 {
    if let id = headerIDs[pipe.id] { return id }
    var id = SPPipeIDs.make()
    while pipesByHeaderID[id] != nil { id = SPPipeIDs.make() }
    headerIDs[pipe.id] = id
    pipesByHeaderID[id] = pipe
    return id
  }

  /// One message from `pipe`, `length` bytes at the front of `input`.
  private func receive(_ input: inout InboundBuffer, length: Int, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    switch Role.protocolID {
    case .req0, .surveyor0:
      // A reply or answer: its backtrace (the hops' pipe ids, then the
      // request or survey id) must end within it. No TTL: NNG's xreq0 and
      // xsurv0 check none.
      guard Self.backtraceEnd(in: input, length: length) != nil else {
        statistics.malformedMessages += 1
        let kind = Role.protocolID == .req0 ? "reply" : "answer"
        throw .protocolViolation(
          "an SP \(kind) of \(length) bytes whose backtrace has no word with the high bit (no request or survey id)")
      }
      try deliver(input.readBytes(length) ?? [], behind: nil, context: context)
    case .rep0, .respondent0:
      // The same scan and TTL as the cooked REP and RESPONDENT.
      var backtrace: Int?
      do throws(SocketError) {
        backtrace = try SPBacktrace.length(
          in: input, messageLength: length, ttl: ttl, kind: Role.protocolID == .rep0 ? "request" : "survey")
      } catch {
        statistics.malformedMessages += 1
        throw error
      }
      guard backtrace != nil else {
        statistics.overTTL += 1  // too many hops: dropped, the pipe stays
        return
      }
      try deliver(input.readBytes(length) ?? [], behind: assignHeaderID(to: pipe), context: context)
    case .bus0:
      try deliver(input.readBytes(length) ?? [], behind: assignHeaderID(to: pipe), context: context)
    case .pair0:
      guard pipe === peer else { return }  // refused: skipped, and it fails after parsing
      try deliver(input.readBytes(length) ?? [], behind: nil, context: context)
    case .pair1:
      guard pipe === peer else { return }
      // As the cooked PAIR v1 checks it (NNG's pair1_pipe_recv_cb).
      guard length >= 4, let hops = input.peekBigEndian(UInt32.self) else {
        statistics.malformedMessages += 1
        throw .protocolViolation("a PAIR v1 message of \(length) bytes, shorter than its 4-byte hop count")
      }
      guard hops <= Pair1Handler.largestHopCount else {
        statistics.malformedMessages += 1
        throw .protocolViolation(
          "a PAIR v1 hop count of 0x\(String(hops, radix: 16)), above 0xff (a high byte is set)")
      }
      guard hops <= UInt32(clamping: max(ttl, 1)) else {
        statistics.overTTL += 1  // skipped by SPPipes; the pipe stays
        return
      }
      try deliver(input.readBytes(length) ?? [], behind: nil, context: context)
    case .sub0, .pull0:
      try deliver(input.readBytes(length) ?? [], behind: nil, context: context)
    case .pub0, .push0:
      statistics.ignoredMessages += 1  // they receive nothing (NNG discards it too)
    }
  }

  /// Delivers `message`, behind the 4-byte pipe id `pipeID` when there is one.
  private func deliver(_ message: [UInt8], behind pipeID: UInt32?, context: SocketContext) throws(SocketError) {
    if let pipeID {
      try context.deliver(SPBacktrace.word(pipeID) + message)
    } else {
      try context.deliver(message)
    }
    statistics.delivered += 1
  }

  /// The bytes a backtrace takes at the front of `input` (up to and
  /// including the first word with its high bit set), within `length`; nil
  /// when it does not end there.
  private static func backtraceEnd(in input: InboundBuffer, length: Int) -> Int? {
    var offset = 0
    while offset + 4 <= length {
      let last = input[offset] & 0x80 != 0
      offset += 4
      if last { return offset }
    }
    return nil
  }

  /// REQ and PUSH: the next ready, writable pipe, round robin, takes it;
  /// it waits while there is none.
  private func sendToNextPipe(_ message: [UInt8]) -> SendDisposition {
    let ready = pipes.ready
    for step in 0..<ready.count {
      let index = (cursor + step) % ready.count
      let pipe = ready[index]
      guard pipe.isWritable else { continue }
      do throws(SocketError) {
        try pipe.write(pipes.framing(of: pipe).frame(message))
      } catch {
        continue  // the pipe is going: the next one takes the message
      }
      cursor = index + 1
      holding = false
      statistics.copiesSent += 1
      return .taken
    }
    hold()
    // Offered again when a pipe completes its handshake or drains to its
    // low watermark (the socket does that after pipeWritable).
    return .wait
  }

  /// PAIR: the peer takes it when its pipe is writable; it waits otherwise.
  private func sendToPeer(header: [UInt8], _ body: [UInt8]) -> SendDisposition {
    if let pipe = peer, pipe.isWritable {
      do throws(SocketError) {
        try pipe.write(pipes.framing(of: pipe).frame(header: header, body))
        holding = false
        statistics.copiesSent += 1
        return .taken
      } catch {
        // The pipe is going: its removal frees the place, and the next
        // peer's handshake offers the message again.
      }
    }
    hold()
    return .wait
  }

  private func hold() {
    if !holding {
      holding = true
      statistics.heldBack += 1
    }
  }

  /// SURVEYOR, PUB, BUS: every ready pipe but `excluded`; a pipe that
  /// cannot take it drops it (counted).
  private func broadcast(_ message: [UInt8], excluding excluded: SocketPipe?) {
    let result = pipes.broadcast(message, excluding: excluded) { _ in statistics.drops += 1 }
    statistics.copiesSent += result.written
    statistics.drops += result.failed  // those pipes are going
  }

  /// REP, RESPONDENT: the pipe the first word names takes the rest; gone
  /// or stalled, the message is dropped (counted), as NNG's xrep0 and
  /// xrespondent0 drop it.
  private func route(_ message: [UInt8]) {
    guard message.count >= 4 else {
      statistics.malformedSends += 1
      return
    }
    guard let pipe = pipesByHeaderID[SPMessage.word(message, at: 0)], pipe.isOpen else {
      statistics.unroutable += 1
      return
    }
    guard pipe.isWritable else {
      statistics.drops += 1
      return
    }
    do throws(SocketError) {
      try pipe.write(pipes.framing(of: pipe).frame(Array(message[4...])))
      statistics.copiesSent += 1
    } catch {
      statistics.drops += 1  // the pipe is going
    }
  }
}
