public import UserProto

/// A PAIR v1 socket: `Socket<Pair1Handler>`.
public typealias Pair1Socket = Socket<Pair1Handler>

/// SP PAIR v1 (NNG's pair1, protocol 0x11 = 1 × 16 + 1, peer 0x11) on a
/// socket with pipes: one peer at a time, messages both ways, each behind a
/// 32-bit hop count.
///
/// On the wire every message starts with a 32-bit big-endian hop count: the
/// number of sockets it has passed, this hop included. This socket sends 1
/// (what NNG's cooked pair1 sends: it sets 0 and adds 1 as the message
/// leaves). On receipt the count is checked as NNG's `pair1_pipe_recv_cb`
/// checks it, and the application gets the body without it:
///
/// - a message shorter than 4 bytes, or whose count is above 0xFF (a
///   high byte set), is malformed: counted in
///   ``Statistics/malformedMessages`` and its pipe fails with a
///   `SocketError.protocolViolation` (NNG closes the pipe);
/// - a count above ``ttl`` is dropped and counted in
///   ``Statistics/messagesOverTTL``; the pipe stays (NNG's `ttl_drop`);
/// - any other count, 0 included, is accepted.
///
/// The first pipe that completes its SP handshake becomes the ``peer``.
/// Another pipe that completes its handshake while the peer is up is
/// refused: it fails with `SocketError.notSupported` (counted in
/// ``Statistics/refusedPipes``, its reason in ``SPPipes/recentFailures``)
/// and the peer is not disturbed. NNG's pair1 does the same
/// (`pair1_pipe_start` returns NNG_EBUSY once the headers are exchanged);
/// a refused dialer re-dials after its back-off and gets the place once
/// the peer has gone.
///
/// A send goes to the peer when its pipe is writable; otherwise (no peer
/// yet, or its output at the send high watermark) it waits
/// (`SendDisposition.wait`) in the socket's send queue, which then fills
/// and stops the fd showing writable, until a peer is paired or drains.
/// A message written to a peer whose pipe then fails is lost, as in NNG.
///
/// Not here: NNG's polyamorous mode (several peers at once, each send
/// addressed by pipe id), which NNG itself deprecates, and raw mode (the
/// hop count passed to and from the application, for devices). A peer in
/// polyamorous mode speaks the same wire protocol and pairs as any other.
///
/// ```swift
/// let pair = try Socket(Pair1Handler(), loop: loop)
/// try pair.dial("tcp://127.0.0.1:5559")
/// try await pair.send(Array("hello".utf8))
/// let answer = try await pair.receive()
/// ```
public final class Pair1Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// The largest hop count a received message may carry (NNG_OPT_MAXTTL;
  /// NNG's default is 8, and it accepts 1 to 15). Values below 1 count as
  /// 1. A change applies from the next message parsed.
  public var ttl: Int

  /// The hop count this socket puts in front of every message it sends.
  public static let sentHopCount: UInt32 = 1
  /// The largest hop count that is not malformed (NNG: a header above
  /// 0xFF is garbage and closes the pipe).
  public static let largestHopCount: UInt32 = 0xff

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages written to the peer.
    public var sent = 0
    /// Messages delivered to the application.
    public var received = 0
    /// Messages that had to wait because no peer could take them when they
    /// were first offered (each counted once, however long it waited).
    public var heldBack = 0
    /// Pipes refused because a peer was already paired (NNG's `already`).
    public var refusedPipes = 0
    /// Peers paired so far (the first, and each that took a gone one's place).
    public var peersPaired = 0
    /// Messages written to a pipe that went before handing them on to the
    /// kernel (or the in-process peer): lost with it.
    public var lostWithPipes = 0
    /// Messages dropped because their hop count was above the TTL (NNG's
    /// `ttl_drop`); their pipe stayed.
    public var messagesOverTTL = 0
    /// Messages too short for a hop count, or whose count was above 0xFF
    /// (NNG's `rx_malformed`); each failed its pipe.
    public var malformedMessages = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public var statistics: Statistics {
    var s = counters
    s.sent = slot.sent
    s.heldBack = slot.heldBack
    s.refusedPipes = slot.refusedPipes
    s.peersPaired = slot.peersPaired
    s.lostWithPipes = slot.lostWithPipes
    return s
  }
  /// The counters of this version's own (the rest are the slot's).
  private var counters = Statistics()

  /// The pipe this socket is paired with, once its handshake completed.
  public var peer: SocketPipe? { slot.peer }

  /// The peer, the sends waiting for it, and their counters.
  private var slot = SPPairSlot()

  /// The 4 bytes in front of every message this socket sends.
  private static let sentHeader: [UInt8] = [0, 0, 0, UInt8(Pair1Handler.sentHopCount)]

  /// A PAIR v1 handler dropping (and counting) messages whose hop count is above `ttl` (at least 1);
  /// a pipe whose peer sends no SP header within `headerTimeout` fails.
  public init(ttl: Int = 8, headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    self.ttl = ttl
    pipes = SPPipes(.pair1, peer: .pair1, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Pairs the first pipe to complete its handshake and delivers its messages (hop count checked and
  /// stripped); refuses a newer one while paired.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    // A refused pipe is failed by throwing once parsing returns: closing it
    // from inside would release the input being parsed.
    var refusal: SocketError?
    try pipes.received(
      &input, from: pipe, context: context,
      handshake: { pipe in refusal = slot.pair(with: pipe, name: "PAIR v1", context: context) }
    ) { (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      guard pipe === slot.peer else { return }  // refused: skipped, and it fails below
      try receiveMessage(&input, length: length, context: context)
    }
    if let refusal { throw refusal }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe; when it was the peer, the next pipe to complete its handshake takes its place.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    slot.removed(pipe, error: error, pipes: pipes)
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  /// Writes the message, behind its hop count, to the peer if its pipe is writable; waits otherwise.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    slot.send { pipe in pipes.framing(of: pipe).frame(header: Self.sentHeader, message) }
  }

  // MARK: Internals

  /// One message from the peer, `length` bytes at the front of `input`:
  /// its hop count checked, its body delivered.
  /// - Throws: ``SocketError/protocolViolation(_:)`` for a malformed hop
  ///   count (that fails the pipe), or what delivering throws.
  private func receiveMessage(_ input: inout InboundBuffer, length: Int, context: SocketContext) throws(SocketError) {
    guard length >= 4, let hops = input.peekBigEndian(UInt32.self) else {
      counters.malformedMessages += 1
      throw .protocolViolation("a PAIR v1 message of \(length) bytes, shorter than its 4-byte hop count")
    }
    guard hops <= Self.largestHopCount else {
      counters.malformedMessages += 1
      throw .protocolViolation(
        "a PAIR v1 hop count of 0x\(String(hops, radix: 16)), above 0xff (a high byte is set)")
    }
    guard hops <= UInt32(clamping: max(ttl, 1)) else {
      counters.messagesOverTTL += 1  // skipped by SPPipes; the pipe stays
      return
    }
    input.moveReaderIndex(forwardBy: 4)
    try context.deliver(input.readBytes(length - 4) ?? [])
    counters.received += 1
  }
}
