import Glibc
import Locking
import Logging
import MaskCore
import Synchronization

/// The shared engine of a ``Socket``: the application-facing state under a
/// lock, the mask fd that mirrors it, and the loop-confined side (the
/// handler, its context, the pipes, dialers and listeners).
///
/// Application calls take the lock once per call. The loop side runs
/// hooks, batching what a hook delivers into one state update after it
/// returns, so a chunk of many messages costs one lock and at most one
/// mask-fd write.
final class SocketCore: @unchecked Sendable {
  /// Unique within the process, never reused: the `socket.id` of its logs.
  let id: UInt64
  /// Where the socket logs, with `socket.id` set (docs/logging.md).
  let logger: Logger
  /// The socket's exported metrics; nil (the default) exports nothing, and
  /// each update site then costs this one nil check (docs/metrics.md).
  let meters: SocketMeters?
  let loop: EventLoop
  let options: SocketOptions
  let mask: MaskFD
  let shared: Lock<HandleState>
  /// The sequence number of the last readiness written to the mask fd.
  private let appliedReadiness = Lock<UInt64>(0)
  private let maskFailed = Atomic<Bool>(false)
  let sendsMessages: Bool
  let sendCancelsReceive: Bool
  let validateSend: @Sendable ([UInt8]) throws(SocketError) -> Void

  // MARK: Loop-confined

  /// Nil once the socket is finished (closed or aborted and torn down).
  var handler: (any SocketHandler)?
  private(set) lazy var context = SocketContext(core: self)
  var pipes: [SocketPipe] = []
  /// Pipes still connecting or closing, not (or no longer) shown to the handler.
  var hiddenPipes: Set<ObjectIdentifier> = []
  var allPipes: [ObjectIdentifier: SocketPipe] = [:]
  /// Sends taken from the shared queue, not yet taken by the handler.
  var outbox = FIFO<[UInt8]>()
  var handledSends: UInt64 = 0
  var deliveries: [[UInt8]] = []
  var hookDepth = 0
  var dialers: [Dialer] = []
  var listeners: [PipeListener] = []
  var closing = false
  var lingerTimer: EventLoop.Scheduled?
  /// Set while a graceful close lingers: the application may have dropped
  /// the handle, and only timers (weakly) and transports (weakly) refer to
  /// the core then. Cleared by ``finish()``.
  var keepAliveWhileClosing: SocketCore?
  /// Set by the first ``finish()``; loop-confined.
  var isFinished = false
  /// Resumed by ``finish()``, or by the loop's shutdown (the timer's
  /// `onShutdown`): the callers of ``Socket/closeAndWait()``.
  var finishWaiters: [(continuation: CheckedContinuation<Void, Never>, shutdownGuard: EventLoop.Scheduled?)] = []
  var nextPipeID: UInt64 = 0
  var offering = false

  private static let nextSocketID = Atomic<UInt64>(0)

  init<H: SocketHandler>(
    handler: H, loop: EventLoop, options: SocketOptions, logger: Logger, metrics: SocketMetrics?
  ) throws(SocketError) {
    let id = SocketCore.nextSocketID.wrappingAdd(1, ordering: .relaxed).newValue
    var logger = logger
    logger[metadataKey: "socket.id"] = "\(id)"
    self.id = id
    self.logger = logger
    self.loop = loop
    self.options = options
    sendsMessages = H.sendsMessages
    sendCancelsReceive = H.sendCancelsReceive
    validateSend = { (message: [UInt8]) throws(SocketError) in try H.validateSend(message) }
    do {
      mask = try MaskFD(usage: .socket)
    } catch {
      throw .maskUpdateFailed(error, "mask fd creation")
    }
    // Made once the socket can no longer fail to be created.
    meters = metrics.map { SocketMeters($0, socketID: id) }
    shared = Lock(HandleState(options: options, sendsMessages: H.sendsMessages))
    self.handler = handler
  }

  // MARK: State and readiness

  /// Changes the state under the lock; then writes the readiness to the
  /// mask fd, wakes async waiters, and, on a socket with metrics, writes
  /// the queue sizes to its meters if they changed (all after the lock).
  @discardableResult
  func update<T>(_ body: (inout HandleState) -> T) -> T {
    let exporting = meters != nil
    let (result, change, wake, sizes) = shared.withLock { s -> (T, ReadinessChange?, Bool, QueueSizes?) in
      let before = s.readiness
      let result = body(&s)
      let (change, wake) = s.readinessChange(from: before)
      return (result, change, wake, exporting ? s.queueSizesToExport() : nil)
    }
    if let change { apply(change) }
    if wake { wakeWaiters() }
    if let sizes { meters?.export(sizes) }
    return result
  }

  /// ``update(_:)`` for a change that may throw (nothing is written then).
  @discardableResult
  func updateThrowing<T>(_ body: (inout HandleState) throws(SocketError) -> T) throws(SocketError) -> T {
    let exporting = meters != nil
    let (result, change, wake, sizes) = try shared.withLock {
      (s: inout HandleState) throws(SocketError) -> (T, ReadinessChange?, Bool, QueueSizes?) in
      let before = s.readiness
      let result = try body(&s)
      let (change, wake) = s.readinessChange(from: before)
      return (result, change, wake, exporting ? s.queueSizesToExport() : nil)
    }
    if let change { apply(change) }
    if wake { wakeWaiters() }
    if let sizes { meters?.export(sizes) }
    return result
  }

  /// The fd number for the application: from now on the mask fd follows
  /// the state (it is brought up to date here).
  var handedOutDescriptor: Int32 {
    let change = shared.withLock { s -> ReadinessChange? in
      guard !s.maskActive, !s.closedByUser else { return nil }
      s.maskActive = true
      s.readinessSequence += 1
      return ReadinessChange(sequence: s.readinessSequence, events: s.readiness)
    }
    if let change { apply(change) }
    return mask.fileDescriptor
  }

  /// Writes a readiness to the mask fd after the lock is released, in state
  /// order: a write older than the last one applied is dropped.
  private func apply(_ change: ReadinessChange) {
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

  /// The fd could not show the state: rather than leave it stale, the
  /// socket fails (once), with the reason.
  private func maskWriteFailed(_ failure: MaskError) {
    guard !maskFailed.exchange(true, ordering: .acquiringAndReleasing) else { return }
    let reason = SocketError.maskUpdateFailed(failure, "mask fd update")
    let failed = update { s -> Bool in
      guard !s.closedByUser, !s.failed else { return false }
      s.fail(reason)
      return true
    }
    // Logged once the lock is released (docs/logging.md: never inside it).
    if failed { logger.notice("socket failed", metadata: ["error": "\(reason)"]) }
  }

  // MARK: Application side (any thread)

  /// Notes a `udp://` dialer or listener: messages above its largest
  /// datagram are refused by ``trySend(_:)`` from now on.
  func noteDatagramTransport(_ url: TransportURL) {
    guard case .udp(let address) = url else { return }
    let limit = address.family == AF_INET6 ? 65_527 : 65_507
    update { $0.datagramLimit = min($0.datagramLimit ?? limit, limit) }
  }

  func trySend(_ message: [UInt8]) throws(SocketError) -> Bool {
    if message.count > options.maximumMessageSize {
      throw .messageTooLarge(size: message.count, limit: options.maximumMessageSize)
    }
    try validateSend(message)
    let cancels = sendCancelsReceive
    let (accepted, schedule, resume, dropped) = try updateThrowing {
      (s: inout HandleState) throws(SocketError) -> (Bool, Bool, Bool, Int) in
      try s.checkCanSend()
      if !s.sendsMessages { throw .notSupported("this socket type does not send messages") }
      if let limit = s.datagramLimit, message.count > limit {
        throw .messageTooLarge(size: message.count, limit: limit)
      }
      guard s.sendWouldNotBlock else { return (false, false, false, 0) }
      var resume = false
      var dropped = 0
      if cancels {
        dropped = s.discardReceived()
        s.statistics.staleDrops += dropped
        resume = s.shouldResumeReading
      }
      s.acceptedSends &+= 1
      s.pendingSends.append(message)
      s.sendBytes += message.count + SocketOptions.perMessageCost
      s.updateWritableLatch()
      if s.drainScheduled { return (true, false, resume, dropped) }
      s.drainScheduled = true
      return (true, true, resume, dropped)
    }
    // Counted once the lock is released (docs/metrics.md).
    if dropped > 0, let meters { meters.received(messages: 0, bytes: 0, stale: dropped) }
    if schedule {
      do {
        try loop.enqueue { [self] in drainSends() }
      } catch {
        update { s in s.fail(.transport(IOError("event loop shut down", ESHUTDOWN))) }
      }
    }
    if resume { resumeReadingSoon() }
    return accepted
  }

  func tryReceive() throws(SocketError) -> ReceiveResult {
    let (result, resume) = update { s -> (Result<ReceiveResult, SocketError>, Bool) in
      let result = s.takeNext()
      return (result, s.shouldResumeReading)
    }
    if resume { resumeReadingSoon() }
    return try result.get()
  }

  func resumeReadingSoon() {
    try? loop.enqueue { [self] in
      let resume = update { s -> Bool in
        guard s.shouldResumeReading else { return false }
        s.readingPaused = false
        return true
      }
      if resume { for pipe in allPipes.values { pipe.transport?.resumeReading() } }
    }
  }

  // MARK: Async waiting

  func wakeWaiters() {
    let waiters = shared.withLock { s -> [CheckedContinuation<Void, Never>] in
      let all = Array(s.receiveWaiters.values) + Array(s.sendWaiters.values)
      s.receiveWaiters = [:]
      s.sendWaiters = [:]
      return all
    }
    for waiter in waiters { waiter.resume() }
  }

  enum Wait { case receive, send }

  /// Suspends until the socket shows readable (or writable), it is closed,
  /// or the task is cancelled; the caller re-checks.
  func wait(for kind: Wait) async {
    let id = shared.withLock { s -> UInt64 in
      s.nextWaiter += 1
      return s.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let ready = shared.withLock { s -> Bool in
          if Task.isCancelled || s.closedByUser { return true }
          switch kind {
          case .receive:
            if s.readiness.contains(.readable) { return true }
            s.receiveWaiters[id] = continuation
          case .send:
            if s.readiness.contains(.writable) { return true }
            s.sendWaiters[id] = continuation
          }
          return false
        }
        if ready { continuation.resume() }
      }
    } onCancel: {
      let waiter = shared.withLock { s in
        s.receiveWaiters.removeValue(forKey: id) ?? s.sendWaiters.removeValue(forKey: id)
      }
      waiter?.resume()
    }
  }

  // MARK: Closing (any thread)

  /// Marks the socket closed for the application; false if it already was.
  func markClosed() -> Bool {
    let first = update { s -> Bool in
      defer {
        s.closedByUser = true
        s.writeShut = true
      }
      return !s.closedByUser
    }
    guard first else { return false }
    wakeWaiters()
    try? mask.close()
    return true
  }

  /// close() and abort(): the loop side ends gracefully or at once.
  func shutDown(graceful: Bool) {
    do {
      try loop.enqueue { [self] in graceful ? beginClose() : finish() }
    } catch {
      // The loop is gone: its shutdown cancelled every operation, so only
      // the fds are left to release, where that is safe.
      if loop.inEventLoop || loop.isShutDown { finish() }
    }
  }

  deinit {
    if !mask.isClosed { try? mask.close() }
    // Never finished (its loop was gone): the metrics go with the core.
    if handler != nil { meters?.destroy() }
  }
}
