public import UserProto

/// A PAIR v0 socket: `Socket<Pair0Handler>`.
public typealias Pair0Socket = Socket<Pair0Handler>

/// SP PAIR v0 (NNG's pair0, nanomsg's NN_PAIR) on a socket with pipes: one
/// peer at a time, messages both ways.
///
/// The first pipe that completes its SP handshake becomes the ``peer``.
/// Another pipe that completes its handshake while the peer is up is
/// refused: it fails with `SocketError.notSupported(_:)` (counted in
/// ``Statistics/refusedPipes``, its reason in ``SPPipes/recentFailures``)
/// and the peer is not disturbed. That is NNG's pair0, which closes the
/// newer pipe (NNG_EBUSY) once its header exchange is done; a refused
/// dialer re-dials after its back-off, and so gets the place once the peer
/// has gone. Messages carry no SP header in the body.
///
/// A send goes to the peer when its pipe is writable; otherwise (no peer
/// yet, or its output at the send high watermark) it waits
/// (`SendDisposition.wait`) in the socket's send queue, which then fills
/// and stops the fd showing writable, until a peer is paired or drains.
/// A message written to a peer whose pipe then fails is lost, as in NNG;
/// those the pipe had not yet handed to the kernel are counted in
/// ``Statistics/lostWithPipes``.
///
/// ```swift
/// let pair = try Socket(Pair0Handler(), loop: loop)
/// try pair.dial("tcp://127.0.0.1:5558")
/// try await pair.send(Array("hello".utf8))
/// let answer = try await pair.receive()
/// ```
public final class Pair0Handler: SocketHandler {
  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages written to the peer.
    public var sent = 0
    /// Messages delivered to the application.
    public var received = 0
    /// Messages that had to wait because no peer could take them when they
    /// were first offered (each counted once, however long it waited).
    public var heldBack = 0
    /// Pipes refused because a peer was already paired.
    public var refusedPipes = 0
    /// Peers paired so far (the first, and each that took a gone one's place).
    public var peersPaired = 0
    /// Messages written to a pipe that went (failed, or its peer closed) before
    /// handing them on to the kernel (or the in-process peer): lost with it.
    /// What the kernel had taken when the pipe went but the peer never read
    /// cannot be counted (SP has no acknowledgements).
    public var lostWithPipes = 0
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

  /// A PAIR v0 handler; a pipe whose peer sends no SP header within `headerTimeout` fails.
  public init(headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.pair0, peer: .pair0, headerTimeout: headerTimeout)
  }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Pairs the first pipe to complete its handshake and delivers its messages; refuses a newer one while paired.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    // A refused pipe is failed by throwing once parsing returns: closing it
    // from inside would release the input being parsed.
    var refusal: SocketError?
    try pipes.received(
      &input, from: pipe, context: context,
      handshake: { pipe in refusal = slot.pair(with: pipe, name: "PAIR v0", context: context) }
    ) { (input: inout InboundBuffer, length: Int, pipe: SocketPipe) throws(SocketError) in
      guard pipe === slot.peer else { return }  // refused: skipped, and it fails below
      try context.deliver(input.readBytes(length) ?? [])
      counters.received += 1
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

  /// Writes the message to the peer if its pipe is writable; waits otherwise (no peer yet, or its output full).
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    slot.send { pipe in pipes.framing(of: pipe).frame(message) }
  }

}
