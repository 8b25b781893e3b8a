import MaskCore

/// A protocol socket's buffers and connection, from which its readiness is
/// derived. Always accessed under the socket's lock.
struct SocketState {
  let options: SocketOptions
  var receiveQueue = FIFO<[UInt8]>()
  /// Queued bytes plus ``SocketOptions/perMessageCost`` per message.
  var receiveBytes = 0
  var readingPaused = false

  /// Messages queued by the application, not yet encoded.
  var pendingSends: [[UInt8]] = []
  var pendingBytes = 0
  /// Encoded bytes handed to the transport and not yet written. Both count
  /// ``SocketOptions/perMessageCost`` per message on top of its bytes.
  var transportBytes = 0
  /// Writable hysteresis: false from the high watermark down to the low one.
  var writableLatch = true
  var flushScheduled = false

  var connection: ConnectionState = .connecting
  /// The connection's addresses, from when it connected.
  var localAddress: SocketAddress?
  var remoteAddress: SocketAddress?
  var peerFinished = false
  var writeShut = false
  var closedByUser = false
  var pendingError: SocketError?
  var errorReported = false
  var peerGone = false

  /// Numbers readiness changes, so their writes to the mask fd (made after
  /// the lock is released) apply in order.
  var readinessSequence: UInt64 = 0

  var receiveWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
  var sendWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
  var nextWaiter: UInt64 = 0

  init(options: SocketOptions) { self.options = options }

  var hasWaiters: Bool { !receiveWaiters.isEmpty || !sendWaiters.isEmpty }
  var queuedMessages: Int { receiveQueue.count }
  var transmitBytes: Int { pendingBytes + transportBytes }
  var failed: Bool { pendingError != nil || peerGone }

  /// True when a send can no longer succeed: it fails at once instead.
  var cannotSend: Bool { closedByUser || writeShut || failed }

  /// A send would be accepted now (below the high watermark).
  var sendWouldNotBlock: Bool { writableLatch && transmitBytes < options.sendHighWatermark }

  mutating func updateWritableLatch() {
    if transmitBytes >= options.sendHighWatermark { writableLatch = false }
    if transmitBytes <= options.sendLowWatermark { writableLatch = true }
  }

  /// After a mutation: the readiness to write to the mask fd, if any, and
  /// whether async waiters must re-check.
  ///
  /// When this mutation changed nothing it still returns the last change
  /// (same sequence): the thread that made that change writes the mask fd
  /// after releasing the state lock, so a caller that has just observed the
  /// state (a `tryReceive` returning end-of-stream) could otherwise poll the
  /// mask fd before it shows that state. Applying the same sequence twice is
  /// a no-op (`ProtocolSocket.apply`); ThreadSanitizer runs found this.
  mutating func readinessChange(from before: MaskEvents) -> (ReadinessChange?, Bool) {
    let after = readiness
    guard after != before else {
      guard !closedByUser, readinessSequence > 0 else { return (nil, false) }
      return (ReadinessChange(sequence: readinessSequence, events: after), false)
    }
    let wake = hasWaiters
    guard !closedByUser else { return (nil, wake) }
    readinessSequence += 1
    return (ReadinessChange(sequence: readinessSequence, events: after), wake)
  }

  /// The readiness the mask fd shows.
  var readiness: MaskEvents {
    var events: MaskEvents = []
    let errorPending = pendingError != nil && !errorReported
    if queuedMessages > 0 || peerFinished || errorPending || peerGone { events.insert(.readable) }
    if cannotSend || sendWouldNotBlock { events.insert(.writable) }
    if errorPending { events.insert(.error) }
    if peerGone || (peerFinished && writeShut) { events.insert(.hangup) }
    return events
  }

  func checkCanSend() throws(SocketError) {
    if closedByUser { throw .closed }
    if let pendingError { throw pendingError }
    if peerGone { throw .peerVanished }
    if writeShut { throw .writeShutdown }
  }

  /// Takes the next message; returns it (or the error to report, which is
  /// then marked received) and whether reading should resume.
  mutating func takeNext() -> (Result<ProtocolSocket.ReceiveResult, SocketError>, Bool) {
    do {
      return try takeNextThrowing()
    } catch {
      return (.failure(error), false)
    }
  }

  private mutating func takeNextThrowing() throws(SocketError) -> (
    Result<ProtocolSocket.ReceiveResult, SocketError>, Bool
  ) {
    if closedByUser { throw .closed }
    if let message = receiveQueue.popFirst() {
      receiveBytes -= message.count + SocketOptions.perMessageCost
      let resume = readingPaused && receiveBytes <= options.receiveLowWatermark
      return (.success(.message(message)), resume)
    }
    if let pendingError, !errorReported {
      errorReported = true
      throw pendingError
    }
    if peerFinished || peerGone || pendingError != nil { return (.success(.endOfStream), false) }
    return (.success(.wouldBlock), false)
  }

  mutating func fail(_ error: SocketError) {
    if pendingError == nil { pendingError = error }
    peerGone = true
    pendingSends = []
    pendingBytes = 0
    transportBytes = 0
    connection = .failed(error)
  }

  mutating func recomputeConnection() {
    if case .failed = connection { return }
    if peerGone || (peerFinished && writeShut) {
      connection = .closed
    } else if peerFinished {
      connection = .peerFinishedSending
    } else if writeShut {
      connection = .writeShutdown
    }
  }
}

/// A readiness to write to a socket's mask fd, numbered in state order.
struct ReadinessChange {
  var sequence: UInt64
  var events: MaskEvents
}
