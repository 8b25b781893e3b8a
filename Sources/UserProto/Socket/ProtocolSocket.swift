import Glibc
import Locking
import MaskCore

/// A protocol socket: subclass it to implement a protocol.
///
/// The base class owns the buffers, the connection and a `MaskFD` whose
/// readiness mirrors the buffers. Its readiness is derived under the same
/// lock that changes the buffers, so no wake-up is lost, none is spurious,
/// and no query consumes readiness:
///
/// - readable exactly when ``tryReceive()`` would not block: a message is
///   queued, or end-of-stream or an error is pending;
/// - writable exactly when ``trySend(_:)`` would not block: the transmit
///   queue is below its high watermark (with hysteresis down to the low
///   watermark), or the socket can no longer send, so a send fails at once
///   (as TCP reports POLLOUT on a closed connection);
/// - hangup when both directions are closed or the peer is gone;
/// - error while an error is pending, until the application has received it.
///
/// Subclasses override the hooks (``received(_:)``, ``encode(_:)``,
/// ``connectionStateChanged(_:)``, ``timerFired(_:)``), which run on the
/// socket's event loop, and call the final helpers (``deliver(_:)``,
/// ``writeRaw(_:)``, ``fail(_:)``, ``startTimer(after:)``). One hook,
/// ``willSend(_:)``, runs on the sending thread instead, for state the next
/// receive depends on. The application API is safe from any thread; the
/// subclass helpers ``deliver(_:)``, ``writeRaw(_:)`` and ``fail(_:)``, and
/// ``handleMessagesOnLoop(_:)`` and ``observeStateChanges(_:)``, run on the
/// loop.
open class ProtocolSocket: @unchecked Sendable {
  /// The loop that drives this socket's transport and runs its hooks.
  public final let loop: EventLoop
  /// The buffer limits.
  public final let options: SocketOptions
  /// The pollable descriptor: put it in poll/epoll/io_uring. Owned by the
  /// socket; closed by ``close()`` and ``abort()``.
  public final var fileDescriptor: Int32 { mask.fileDescriptor }
  /// The mask fd behind ``fileDescriptor``.
  public final let mask: MaskFD

  final let state: Lock<SocketState>
  /// Serialises senders from the room check through ``willSend(_:)`` to the
  /// enqueue, so a send whose ``willSend(_:)`` ran is queued unless the
  /// socket fails or closes meanwhile. Taken before the state lock, never
  /// inside it, and never across a wait.
  private final let sendOrder = Lock<Void>(())
  /// Loop-confined.
  final var transport: (any Transport)?
  private final var lingerTimer: EventLoop.Scheduled?
  /// Loop-confined: the transport sent end-of-stream after all queued output.
  final var outputFinished = false

  /// Creates an unconnected socket; connect it with ``connect(to:loop:options:)``, or
  /// let a ``ProtocolListener`` attach an accepted connection.
  public required init(loop: EventLoop, options: SocketOptions = SocketOptions()) throws {
    self.loop = loop
    self.options = options
    mask = try MaskFD(usage: .socket)
    state = Lock(SocketState(options: options))
    try mask.set(state.withLock { $0.readiness })
  }

  deinit {
    // Dropped without close(): close the connection on the loop (nothing
    // else references the transport strongly) and the mask fd here.
    if let transport {
      do {
        try loop.execute { transport.close() }
      } catch {
        ProtocolSocket.closeAfterLoop(transport, loop)
      }
    }
    if !mask.isClosed { try? mask.close() }
  }

  /// Closes a transport whose loop no longer takes tasks: directly on the
  /// loop's thread (draining its shutdown) or once that thread has stopped
  /// (nothing else touches the transport then); while another thread drains
  /// the loop, its cancelled operations close it.
  static func closeAfterLoop(_ transport: any Transport, _ loop: EventLoop) {
    if loop.inEventLoop || loop.isShutDown { transport.close() }
  }

  // MARK: - Hooks for subclasses (run on the loop)

  /// Bytes (stream transports) or one datagram arrived. Parse them, call
  /// ``deliver(_:)`` for each complete message, or throw a ``SocketError``
  /// (e.g. `.protocolViolation`) to fail the connection. The default
  /// delivers each chunk as one message.
  open func received(_ bytes: [UInt8]) throws {
    try deliver(bytes)
  }

  /// The peer finished sending. Throw (e.g. ``SocketError/peerVanished``
  /// when a frame was cut short) to turn the end into an error. The default
  /// accepts it.
  open func receivedEndOfStream() throws {}

  /// Turns an application message into wire bytes (or one datagram). The
  /// default sends the message as is.
  open func encode(_ message: [UInt8]) throws -> [UInt8] { message }

  /// Runs on the thread that calls ``trySend(_:)`` or ``send(_:)``, before
  /// the message is queued, with no lock of the socket held; returns the
  /// message to queue. Throw to refuse the send. The default returns it.
  ///
  /// Unlike ``encode(_:)``, which runs later on the loop, it runs before the
  /// send call returns. State that the application's next receive depends
  /// on belongs here: a request id that replies are matched against, say.
  /// If it were set in ``encode(_:)``, a reply to the previous request that
  /// arrives between the send call and the encoding would still be
  /// accepted. It is called only when the socket can send and its queue has
  /// room, and concurrent senders wait while it runs, so once it returns
  /// the message is queued: the send reports success, or throws only if the
  /// socket failed or closed meanwhile. Do not send from it.
  open func willSend(_ message: [UInt8]) throws(SocketError) -> [UInt8] { message }

  /// The connection changed state.
  open func connectionStateChanged(_ state: ConnectionState) {}

  /// A timer from ``startTimer(after:)`` fired.
  open func timerFired(_ timer: ProtocolTimer) {}

  /// Bytes the protocol adds to each message inside the frame whose size is
  /// limited (a request id, say): sends refuse messages longer than the
  /// maximum message size minus this.
  open var messageOverhead: Int { 0 }

  /// The largest datagram the transport can send (UDP over IPv4: 65,507
  /// bytes), or nil for streams. Set before the socket is published.
  public internal(set) final var maximumDatagramSize: Int?

  /// The largest message ``trySend(_:)`` accepts: the maximum message size,
  /// or on a datagram transport the largest datagram if smaller, minus
  /// ``messageOverhead``.
  public final var maximumSendSize: Int {
    min(options.maximumMessageSize, maximumDatagramSize ?? .max) - messageOverhead
  }

  /// Whether applications may send on this socket type (false for a
  /// subscriber, say); sends then throw ``SocketError/notSupported(_:)``.
  open var sendsMessages: Bool { true }

  // MARK: - Serving on the loop

  /// Loop-confined.
  private final var loopHandler: ((ProtocolSocket, [UInt8]) -> Void)?

  /// Loop-confined.
  private final var stateObserver: ((ConnectionState) -> Void)?

  /// Calls `handler` on the loop whenever the connection changes state
  /// (after ``connectionStateChanged(_:)``). Call it on the loop.
  public final func observeStateChanges(_ handler: @escaping (ConnectionState) -> Void) {
    stateObserver = handler
  }

  /// Hands received messages to `handler` on the loop instead of queueing
  /// them: for servers that answer on the loop, without locks or tasks.
  /// Call it on the loop before data arrives (a listener's `configure`
  /// closure runs at the right time).
  public final func handleMessagesOnLoop(_ handler: @escaping (ProtocolSocket, [UInt8]) -> Void) {
    loopHandler = handler
  }

  /// Whether received messages go to a ``handleMessagesOnLoop(_:)``
  /// handler (called inside ``deliver(_:)``) instead of the receive queue.
  /// On the loop.
  public final var handlesMessagesOnLoop: Bool { loopHandler != nil }

  // MARK: - Helpers for subclasses (on the loop)

  /// Queues a received message for the application.
  /// - Throws: ``SocketError/messageTooLarge(size:limit:)``; the caller
  ///   should let it propagate so the connection fails.
  public final func deliver(_ message: [UInt8]) throws(SocketError) {
    if message.count > options.maximumMessageSize {
      throw .messageTooLarge(size: message.count, limit: options.maximumMessageSize)
    }
    if let loopHandler {
      loopHandler(self, message)
      return
    }
    let pause = update { s -> Bool in
      s.receiveQueue.append(message)
      s.receiveBytes += message.count + SocketOptions.perMessageCost
      if s.receiveBytes >= s.options.receiveHighWatermark && !s.readingPaused {
        s.readingPaused = true
        return true
      }
      return false
    }
    if pause { transport?.pauseReading() }
  }

  /// Writes protocol bytes (a handshake, a keep-alive) ahead of queued
  /// messages, bypassing ``encode(_:)``.
  public final func writeRaw(_ bytes: [UInt8]) {
    guard let transport, !bytes.isEmpty || transport.isDatagram else { return }
    update { $0.transportBytes += bytes.count + SocketOptions.perMessageCost }
    transport.write(bytes)
  }

  /// Fails the connection: the application sees the error on its next
  /// receive (error readiness until then), and the connection closes.
  public final func fail(_ error: SocketError) {
    guard let transport else {
      update { s in s.fail(error) }
      notify(.failed(error))
      return
    }
    self.transport = nil
    transport.close()
    update { s in s.fail(error) }
    notify(.failed(error))
  }

  /// Starts a timer that calls ``timerFired(_:)`` on the loop.
  @discardableResult
  public final func startTimer(after delay: Duration) throws(LoopError) -> ProtocolTimer {
    let timer = ProtocolTimer()
    let scheduled = try loop.schedule(after: delay) { [weak self] in
      guard let self, !timer.isCancelled else { return }
      self.timerFired(timer)
    }
    timer.attach(scheduled)
    return timer
  }

  // MARK: - Application API (any thread)

  /// The connection's state.
  public final var connectionState: ConnectionState { state.withLock { $0.connection } }

  /// This end's address once connected (kept after the connection ends);
  /// nil before, and for in-memory pairs.
  public final var localAddress: SocketAddress? { state.withLock { $0.localAddress } }

  /// The peer's address once connected (kept after the connection ends):
  /// for an accepted TCP connection, the client's address and port; nil
  /// before, and for in-memory pairs.
  public final var remoteAddress: SocketAddress? { state.withLock { $0.remoteAddress } }

  /// The readiness the socket shows, derived from its buffers.
  public final var readiness: MaskEvents { state.withLock { $0.readiness } }

  /// Queues a message if it fits; returns false when the send would block
  /// (the transmit queue is at its high watermark).
  /// - Throws: ``SocketError/closed`` after close, ``SocketError/writeShutdown``
  ///   after ``shutdownWrite()``, the pending error of a failed connection,
  ///   ``SocketError/messageTooLarge(size:limit:)``.
  @discardableResult
  public final func trySend(_ message: [UInt8]) throws(SocketError) -> Bool {
    if !sendsMessages { throw .notSupported("\(type(of: self)) does not send messages") }
    let limit = maximumSendSize
    if message.count > limit { throw .messageTooLarge(size: message.count, limit: limit) }
    // willSend runs only for a send that is then queued (see its docs):
    // sendOrder keeps other senders from taking the room in between.
    let schedule = try sendOrder.withLock { _ throws(SocketError) -> Bool? in
      let accepting = try state.withLock { (s: inout SocketState) throws(SocketError) -> Bool in
        try s.checkCanSend()
        return s.sendWouldNotBlock
      }
      guard accepting else { return nil }
      let message = try willSend(message)
      return try updateThrowing { (s: inout SocketState) throws(SocketError) -> Bool in
        // Other senders waited. Room taken meanwhile by the loop's own
        // writes (writeRaw) lets this one accepted message overshoot the
        // high watermark: bounded by one message.
        try s.checkCanSend()
        s.pendingSends.append(message)
        s.pendingBytes += message.count + SocketOptions.perMessageCost
        s.updateWritableLatch()
        if s.flushScheduled { return false }
        s.flushScheduled = true
        return true
      }
    }
    guard let schedule else { return false }
    if schedule {
      // One flush for all the messages sent before it runs (also on the
      // loop: a handler answering a burst of requests sends them together).
      do {
        try loop.execute { [self] in flush() }
      } catch {
        // The loop is gone: the connection is over. Only the state changes
        // here; the transport is the loop's (closed as the loop stops).
        update { s in s.fail(.transport(IOError("event loop shut down", ESHUTDOWN))) }
      }
    }
    return true
  }

  /// The result of a non-blocking receive.
  public enum ReceiveResult: Sendable, Hashable {
    /// The next message.
    case message([UInt8])
    /// Nothing queued yet.
    case wouldBlock
    /// The peer finished sending, or the connection ended (after its error
    /// was received).
    case endOfStream
  }

  /// Takes the next message without blocking.
  /// - Throws: the pending error once (then `.endOfStream` follows), or
  ///   ``SocketError/closed`` after close.
  public final func tryReceive() throws(SocketError) -> ReceiveResult {
    // The state changes (and the mask follows) even when the result is the
    // pending error: receiving it clears POLLERR.
    let (result, resume) = update { s in s.takeNext() }
    if resume { resumeReadingSoon() }
    return try result.get()
  }

  /// Drops every received message still queued for the application (not a
  /// pending error or end-of-stream) and returns how many; readiness and
  /// backpressure follow. Safe from any thread. A request/reply protocol
  /// calls it from ``willSend(_:)`` so that replies to an abandoned request
  /// are never received.
  @discardableResult
  public final func discardReceivedMessages() -> Int {
    let (count, resume) = update { s -> (Int, Bool) in
      var count = 0
      while let message = s.receiveQueue.popFirst() {
        s.receiveBytes -= message.count + SocketOptions.perMessageCost
        count += 1
      }
      return (count, s.readingPaused && s.receiveBytes <= s.options.receiveLowWatermark)
    }
    if resume { resumeReadingSoon() }
    return count
  }

  /// Shuts down the write side after the queued messages (half-close).
  public final func shutdownWrite() throws(SocketError) {
    try updateThrowing { (s: inout SocketState) throws(SocketError) in
      if s.closedByUser { throw .closed }
      s.writeShut = true
      s.recomputeConnection()
    }
    try? loop.execute { [self] in
      flush()
      transport?.shutdownWrite()
      notify(connectionState)
    }
  }

  /// Closes gracefully: queued messages are flushed, the write side is shut
  /// down, and the connection closes once the peer finishes (or after 5 s).
  /// The socket is closed for the application at once.
  public final func close() throws(SocketError) {
    try updateThrowing { (s: inout SocketState) throws(SocketError) in
      if s.closedByUser { throw .closed }
      s.closedByUser = true
      s.writeShut = true
    }
    wakeWaiters()
    try? mask.close()
    do {
      try loop.execute { [self] in
        flush()
        guard let transport else { return }
        // The connection closes once both ends have finished (the peer's
        // end-of-stream and ours after the queued output), or at the timer.
        lingerTimer = try? loop.schedule(after: .seconds(5)) { [self] in finishClose() }
        transport.shutdownWrite()
        transport.resumeReading()
        finishCloseIfDone()
      }
    } catch {
      // The loop is gone: nothing is left to flush.
      closeTransportAfterLoop()
    }
  }

  /// Closes at once, dropping queued messages.
  public final func abort() { abort(reset: false) }

  /// Closes at once, dropping queued messages; with `reset`, the peer sees
  /// the connection reset (an error) instead of a clean end.
  final func abort(reset: Bool) {
    let first = update { s -> Bool in
      defer {
        s.closedByUser = true
        s.writeShut = true
      }
      return !s.closedByUser
    }
    guard first else { return }
    wakeWaiters()
    try? mask.close()
    do {
      try loop.execute { [self] in
        if reset { transport?.reset() } else { transport?.close() }
        transport = nil
        releaseHandlers()
      }
    } catch {
      closeTransportAfterLoop()
    }
  }

  // MARK: - Internals

  /// Mutates the state under the lock and derives the readiness from it
  /// under the same lock. The mask fd is written after the lock is released
  /// (a poller woken by that write must not find the lock held), in the
  /// order of the changes: each change gets a sequence number under the
  /// state lock, and a write older than the last one applied is dropped, so
  /// the fd always ends at the readiness of the latest state.
  @discardableResult
  final func update<T>(_ body: (inout SocketState) -> T) -> T {
    let (result, change, wake) = state.withLock { s -> (T, ReadinessChange?, Bool) in
      let before = s.readiness
      let result = body(&s)
      let (change, wake) = s.readinessChange(from: before)
      return (result, change, wake)
    }
    if let change { apply(change) }
    if wake { wakeWaiters() }
    return result
  }

  @discardableResult
  final func updateThrowing<T>(_ body: (inout SocketState) throws(SocketError) -> T) throws(SocketError) -> T {
    let (result, change, wake) = try state.withLock {
      (s: inout SocketState) throws(SocketError) -> (T, ReadinessChange?, Bool) in
      let before = s.readiness
      let result = try body(&s)
      let (change, wake) = s.readinessChange(from: before)
      return (result, change, wake)
    }
    if let change { apply(change) }
    if wake { wakeWaiters() }
    return result
  }

  /// The sequence number of the last readiness written to the mask fd.
  private final let appliedReadiness = Lock<UInt64>(0)

  /// Whether writing the mask fd has failed (the socket failed with it).
  private final let maskFailed = Lock<Bool>(false)

  /// Writes `change` to the mask fd unless a later (or the same) sequence is
  /// already there; returns once the mask shows `change` or a later one.
  private final func apply(_ change: ReadinessChange) {
    let failure = appliedReadiness.withLock { applied -> MaskError? in
      guard change.sequence > applied else { return nil }
      applied = change.sequence
      do throws(MaskError) {
        try mask.set(change.events)
        return nil
      } catch {
        return error
      }
    }
    if let failure { maskWriteFailed(failure) }
  }

  /// The mask fd could not show the socket's readiness: rather than leave
  /// it stale, the socket fails with the reason (once), on the loop.
  private final func maskWriteFailed(_ failure: MaskError) {
    let first = maskFailed.withLock { failed -> Bool in
      defer { failed = true }
      return !failed
    }
    guard first else { return }
    let reason = SocketError.maskUpdateFailed(failure, "mask fd update")
    let failOnLoop: @Sendable () -> Void = { [self] in
      if state.withLock({ $0.closedByUser }) { return }  // the mask was closed by close()/abort()
      fail(reason)
    }
    if loop.inEventLoop {
      failOnLoop()
    } else {
      do throws(LoopError) {
        try loop.execute(failOnLoop)
      } catch {
        update { s in s.fail(reason) }
      }
    }
  }

  final func notify(_ connection: ConnectionState) {
    connectionStateChanged(connection)
    stateObserver?(connection)
    switch connection {
    case .closed, .failed: releaseHandlers()
    default: break
    }
  }

  /// Drops the application's closures once the connection has ended, so a
  /// closure that captures the socket does not keep it alive. On the loop.
  final func releaseHandlers() {
    stateObserver = nil
    loopHandler = nil
  }

  /// close()/abort() when the loop no longer takes tasks.
  private final func closeTransportAfterLoop() {
    guard loop.inEventLoop || loop.isShutDown, let transport else { return }
    self.transport = nil
    transport.close()
  }

  private final func resumeReadingSoon() {
    try? loop.execute { [self] in
      let resume = update { s -> Bool in
        guard s.readingPaused, s.receiveBytes <= s.options.receiveLowWatermark else { return false }
        s.readingPaused = false
        return true
      }
      if resume { transport?.resumeReading() }
    }
  }

  /// Encodes and hands queued messages to the transport. On the loop.
  final func flush() {
    let batch = update { s -> [[UInt8]] in
      s.flushScheduled = false
      // Until connected, messages wait: the connection's own first bytes (a
      // protocol header written when it connects) must go first.
      if case .connecting = s.connection { return [] }
      let all = s.pendingSends
      s.pendingSends = []
      return all
    }
    guard !batch.isEmpty else { return }
    guard let transport else {
      update { s in
        for message in batch { s.pendingBytes -= message.count + SocketOptions.perMessageCost }
        s.updateWritableLatch()
      }
      return
    }
    // Encode the whole batch, then move it from the pending count to the
    // transport's in one state update (one lock and one readiness check per
    // flush, not per message), then write it. A message that cannot be
    // encoded fails the connection after the ones before it are written.
    var wires: [[UInt8]] = []
    wires.reserveCapacity(batch.count)
    var failure: SocketError?
    for message in batch {
      let wire: [UInt8]
      do {
        wire = try encode(message)
      } catch {
        failure = error as? SocketError ?? .protocolViolation("encode failed: \(error)")
        break
      }
      if let maximum = maximumDatagramSize, wire.count > maximum {
        // encode added more than messageOverhead: a clear error, not EMSGSIZE.
        failure = .messageTooLarge(size: wire.count, limit: maximum)
        break
      }
      wires.append(wire)
    }
    // A zero-length stream message is nothing on the wire.
    let datagrams = transport.isDatagram
    update { s in
      for message in batch.prefix(wires.count) { s.pendingBytes -= message.count + SocketOptions.perMessageCost }
      for wire in wires where !wire.isEmpty || datagrams {
        s.transportBytes += wire.count + SocketOptions.perMessageCost
      }
      s.updateWritableLatch()
    }
    for wire in wires where !wire.isEmpty || datagrams { transport.write(wire) }
    if let failure { fail(failure) }
  }

  /// Closes the connection once both directions are done: the peer has
  /// finished, and our queued output and end-of-stream are sent (after
  /// ``shutdownWrite()`` or ``close()``). On the loop.
  final func finishCloseIfDone() {
    guard transport != nil, outputFinished else { return }
    guard state.withLock({ ($0.closedByUser || $0.writeShut) && $0.peerFinished }) else { return }
    finishClose()
  }

  final func finishClose() {
    lingerTimer?.cancel()
    lingerTimer = nil
    transport?.close()
    transport = nil
    update { s in s.connection = .closed }
    releaseHandlers()
  }
}

/// A timer of a protocol socket.
public final class ProtocolTimer: Sendable {
  private let state = Lock<(scheduled: EventLoop.Scheduled?, cancelled: Bool)>((nil, false))

  /// True once ``cancel()`` was called (from any thread).
  public var isCancelled: Bool { state.withLock { $0.cancelled } }

  func attach(_ scheduled: EventLoop.Scheduled) {
    let cancelled = state.withLock { s -> Bool in
      s.scheduled = scheduled
      return s.cancelled
    }
    if cancelled { scheduled.cancel() }
  }

  /// Cancels the timer; its ``ProtocolSocket/timerFired(_:)`` will not run.
  /// Safe from any thread.
  public func cancel() {
    let scheduled = state.withLock { s -> EventLoop.Scheduled? in
      s.cancelled = true
      return s.scheduled
    }
    scheduled?.cancel()
  }
}
