import Locking
import Synchronization
public import UserProto

/// A device (NNG's `nng_device`): joins two raw sockets of complementary
/// protocols and forwards what each receives to the other, headers
/// untouched, so that topologies with brokers work.
///
/// A REQ/REP broker is a raw REP front, where requesters connect, and a
/// raw REQ back, connected to the servers: each request goes front to back
/// behind the front pipe's id (its backtrace one word longer, a hop), and
/// each reply comes back to front, whose raw REP sends it to the pipe that
/// word names. Likewise SURVEYOR/RESPONDENT (raw RESPONDENT front, raw
/// SURVEYOR back), PUB/SUB (raw SUB front dialing the publisher, raw PUB
/// back: one way), PUSH/PULL (raw PULL front, raw PUSH back: one way),
/// PAIR and BUS. A device over one socket (``init(reflecting:)``: a raw BUS
/// or PAIR) is a reflector: what it receives goes back out, a raw BUS
/// skipping the pipe it came from, so a BUS hub makes every leaf hear every
/// other.
///
/// Each direction is a loop: receive one message, send it on, then take
/// the next. A send that would block (the other socket's send queue full:
/// a raw REQ or PUSH with no pipe that can take more) suspends that
/// direction, which then takes nothing more from its source; the source's
/// receive queue fills, its pipes stop being read, and the peers upstream
/// are held back by TCP. Nothing polls: the waits are the sockets' async
/// `receive()` and `send(_:)`, driven by the state their fds show. A
/// message the other socket refuses outright (too large for it, or too
/// short for its header) is dropped and counted in
/// ``Statistics/refused``; the direction goes on.
///
/// ``run()`` returns once either socket is closed (or its message stream
/// ends), or ``stop()`` is called, or the task running it is cancelled; it
/// throws the error of a socket that failed. The device does not own the
/// sockets (NNG's does, and closes them when it stops): close them when
/// done, or make them with `Socket.withSocket`.
///
/// ```swift
/// let front = try Socket(RawRep0Handler(), loop: loop)
/// let back = try Socket(RawReq0Handler(), loop: loop)
/// try front.listen("tcp://*:5555")       // requesters dial here
/// try back.dial("tcp://10.0.0.2:5556")   // a REP server
/// let device = try SPDevice(front, back)
/// try await device.run()                 // until a socket closes or device.stop()
/// ```
public final class SPDevice<Front: SPRawRole, Back: SPRawRole>: Sendable {
  /// One socket: with REQ/REP, the raw REP the requesters reach.
  public let front: Socket<SPRawHandler<Front>>
  /// The other socket: with REQ/REP, the raw REQ that reaches the servers.
  /// The same socket as ``front`` for a reflector.
  public let back: Socket<SPRawHandler<Back>>
  /// True for a device over one socket (``init(reflecting:)``).
  public let isReflector: Bool
  /// True when messages go from ``front`` to ``back`` (front receives and
  /// back sends; for a reflector, from the socket back to itself).
  public let forwardsFrontToBack: Bool
  /// True when messages go from ``back`` to ``front`` (never for a reflector).
  public let forwardsBackToFront: Bool

  /// What the device has forwarded so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages received from ``SPDevice/front`` and accepted by ``SPDevice/back``.
    public var frontToBack = 0
    /// Messages received from ``SPDevice/back`` and accepted by ``SPDevice/front``.
    public var backToFront = 0
    /// Messages the other socket refused (too large for it, or too short
    /// for its header): dropped.
    public var refused = 0
  }

  /// The counts so far; readable from any thread.
  public var statistics: Statistics {
    var statistics = Statistics()
    statistics.frontToBack = frontToBackCount.load(ordering: .relaxed)
    statistics.backToFront = backToFrontCount.load(ordering: .relaxed)
    statistics.refused = refusedCount.load(ordering: .relaxed)
    return statistics
  }

  private let frontToBackCount = Atomic<Int>(0)
  private let backToFrontCount = Atomic<Int>(0)
  private let refusedCount = Atomic<Int>(0)

  private struct RunState {
    var started = false
    var stopRequested = false
    /// The forwarding, once ``run()`` started it (``stop()`` cancels it).
    var task: Task<Void, any Error>?
  }
  private let state = Lock(RunState())

  /// A device joining `front` and `back`, whose protocols must be each
  /// other's peers (REP and REQ, RESPONDENT and SURVEYOR, SUB and PUB, PULL
  /// and PUSH, PAIR and PAIR, BUS and BUS; either order). Passing one
  /// socket as both makes a reflector, as ``init(reflecting:)`` does.
  /// Nothing moves before ``run()``.
  /// - Throws: `SocketError.notSupported(_:)` when the protocols are not
  ///   peers (NNG's NNG_EINVAL), or, for one socket, when its protocol is
  ///   not its own peer.
  public init(_ front: Socket<SPRawHandler<Front>>, _ back: Socket<SPRawHandler<Back>>) throws(SocketError) {
    let reflector = ObjectIdentifier(front) == ObjectIdentifier(back)
    guard Front.protocolID.peer == Back.protocolID else {
      throw .notSupported(
        reflector
          ? "a reflector needs a protocol that is its own peer (PAIR, BUS), not \(Front.protocolID.name)"
          : "a device joins peer protocols; \(Front.protocolID.name) and \(Back.protocolID.name) are not peers")
    }
    self.front = front
    self.back = back
    isReflector = reflector
    forwardsFrontToBack = Front.protocolID.canReceive && Back.protocolID.canSend
    forwardsBackToFront = !reflector && Back.protocolID.canReceive && Front.protocolID.canSend
  }

  /// Forwards until either socket is closed (or its stream ends), ``stop()``
  /// is called, or the calling task is cancelled; then returns. Runs once:
  /// a second call throws `SocketError.notSupported(_:)`; after ``stop()``
  /// it returns at once.
  /// - Throws: the error of a socket that failed (what its `receive()` or
  ///   `send(_:)` threw).
  public func run() async throws {
    let start = state.withLock { s -> Start in
      if s.started { return .again }
      s.started = true
      return s.stopRequested ? .stopped : .go
    }
    switch start {
    case .again: throw SocketError.notSupported("an SPDevice runs once, and run() was called already")
    case .stopped: return
    case .go: break
    }
    let task = Task { try await self.forwardAll() }
    let stopNow = state.withLock { s -> Bool in
      s.task = task
      return s.stopRequested
    }
    if stopNow { task.cancel() }
    try await withTaskCancellationHandler {
      try await task.value
    } onCancel: {
      task.cancel()
    }
  }

  /// Stops the device from any thread: ``run()`` returns once each
  /// direction has left its wait (a message received and not yet sent is
  /// dropped). The sockets stay open.
  public func stop() {
    let task = state.withLock { s -> Task<Void, any Error>? in
      s.stopRequested = true
      return s.task
    }
    task?.cancel()
  }

  // MARK: Internals

  private enum Start { case go, stopped, again }
  private enum Direction { case frontToBack, backToFront }
  private enum Outcome { case forwarded, refused, ended }

  /// Both directions at once; the first to end ends the other.
  private func forwardAll() async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      if forwardsFrontToBack {
        group.addTask { try await self.forward(from: self.front, to: self.back, .frontToBack) }
      }
      if forwardsBackToFront {
        group.addTask { try await self.forward(from: self.back, to: self.front, .backToFront) }
      }
      _ = try await group.next()
      group.cancelAll()
    }
  }

  /// One direction: receives a message, sends it on, and only then takes
  /// the next.
  private func forward<Source: SocketHandler, Destination: SocketHandler>(
    from source: Socket<Source>, to destination: Socket<Destination>, _ direction: Direction
  ) async throws {
    while let message = try await next(from: source) {
      switch try await pass(message, to: destination) {
      case .forwarded:
        switch direction {
        case .frontToBack: frontToBackCount.add(1, ordering: .relaxed)
        case .backToFront: backToFrontCount.add(1, ordering: .relaxed)
        }
      case .refused:
        refusedCount.add(1, ordering: .relaxed)
      case .ended:
        return
      }
    }
  }

  /// The next message from `source`; nil once it is closed, its stream
  /// ended, or the device is stopping.
  private func next<Source: SocketHandler>(from source: Socket<Source>) async throws -> [UInt8]? {
    do {
      return try await source.receive()
    } catch SocketError.closed {
      return nil
    } catch is CancellationError {
      return nil
    }
  }

  /// Sends `message` on `destination`, waiting while its send queue is full.
  private func pass<Destination: SocketHandler>(_ message: [UInt8], to destination: Socket<Destination>)
    async throws -> Outcome
  {
    do {
      try await destination.send(message)
      return .forwarded
    } catch let error as SocketError {
      switch error {
      case .closed, .writeShutdown: return .ended
      case .messageTooLarge, .protocolViolation: return .refused
      default: throw error
      }
    } catch is CancellationError {
      return .ended
    }
  }
}

extension SPDevice where Front == Back {
  /// A reflector over one raw socket whose protocol is its own peer (PAIR,
  /// BUS): what it receives it sends back out (a raw BUS to every pipe but
  /// the one the message came from).
  /// - Throws: `SocketError.notSupported(_:)` for any other protocol.
  public convenience init(reflecting socket: Socket<SPRawHandler<Front>>) throws(SocketError) {
    try self.init(socket, socket)
  }
}
