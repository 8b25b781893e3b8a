import MaskCore

/// A ``Socket``'s application-facing state, from which its readiness is
/// derived. Always accessed under the socket's lock.
struct HandleState {
  let options: SocketOptions
  let sendsMessages: Bool

  var receiveQueue = FIFO<[UInt8]>()
  /// Queued bytes plus ``SocketOptions/perMessageCost`` per message.
  var receiveBytes = 0
  /// Reading from the pipes is paused (receive queue at its high watermark).
  var readingPaused = false
  /// The handler ended the message stream (``SocketContext/finishReceiving()``).
  var receiveFinished = false

  /// Messages the application sent that the loop has not taken yet.
  var pendingSends: [[UInt8]] = []
  /// The largest UDP datagram any of the socket's `udp://` dialers or
  /// listeners can send (nil: none): a larger message is refused at the call.
  var datagramLimit: Int?
  /// Bytes (plus the per-message cost) of sends the handler has not taken:
  /// those pending here and those waiting on the loop.
  var sendBytes = 0
  var writableLatch = true
  var drainScheduled = false
  /// Sends accepted so far (for ``SocketHandler/sendCancelsReceive``).
  var acceptedSends: UInt64 = 0

  var writeShut = false
  var closedByUser = false
  var pendingError: SocketError?
  var errorReported = false
  var failed = false

  var statistics = SocketStatistics()
  /// The queue sizes last taken for the socket's meters, and the number of
  /// that export (``queueSizesToExport()``); unused without metrics.
  var exportedSendBytes = 0
  var exportedReceiveBytes = 0
  var queueExportSequence: UInt64 = 0

  /// The mask fd is written only once its number was handed out: before
  /// that nobody can be polling it.
  var maskActive = false
  var readinessSequence: UInt64 = 0

  var receiveWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
  var sendWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
  var nextWaiter: UInt64 = 0

  init(options: SocketOptions, sendsMessages: Bool) {
    self.options = options
    self.sendsMessages = sendsMessages
  }

  var hasWaiters: Bool { !receiveWaiters.isEmpty || !sendWaiters.isEmpty }
  var errorPending: Bool { pendingError != nil && !errorReported }

  /// True when a send cannot succeed: it fails at once instead (so the
  /// socket shows writable, as TCP does on a closed connection).
  var cannotSend: Bool { closedByUser || writeShut || failed || !sendsMessages }

  var sendWouldNotBlock: Bool { writableLatch && sendBytes < options.sendHighWatermark }

  mutating func updateWritableLatch() {
    if sendBytes >= options.sendHighWatermark { writableLatch = false }
    if sendBytes <= options.sendLowWatermark { writableLatch = true }
  }

  /// The readiness the mask fd shows.
  var readiness: MaskEvents {
    var events: MaskEvents = []
    if !receiveQueue.isEmpty || receiveFinished || errorPending || failed { events.insert(.readable) }
    if cannotSend || sendWouldNotBlock { events.insert(.writable) }
    if errorPending { events.insert(.error) }
    if failed || (receiveFinished && writeShut) { events.insert(.hangup) }
    return events
  }

  /// After a mutation: the readiness to write to the mask fd, if it
  /// changed and the fd is in use, and whether async waiters must re-check.
  mutating func readinessChange(from before: MaskEvents) -> (ReadinessChange?, Bool) {
    let after = readiness
    guard after != before else { return (nil, false) }
    let wake = hasWaiters
    guard maskActive, !closedByUser else { return (nil, wake) }
    readinessSequence += 1
    return (ReadinessChange(sequence: readinessSequence, events: after), wake)
  }

  /// After a mutation, on a socket with metrics: the queue sizes for its
  /// meters when either changed since the last export, nil otherwise.
  mutating func queueSizesToExport() -> QueueSizes? {
    guard sendBytes != exportedSendBytes || receiveBytes != exportedReceiveBytes else { return nil }
    exportedSendBytes = sendBytes
    exportedReceiveBytes = receiveBytes
    queueExportSequence += 1
    return QueueSizes(sequence: queueExportSequence, sendBytes: sendBytes, receiveBytes: receiveBytes)
  }

  func checkCanSend() throws(SocketError) {
    if closedByUser { throw .closed }
    if let pendingError { throw pendingError }
    if failed { throw .peerVanished }
    if writeShut { throw .writeShutdown }
  }

  /// Drops the queued received messages; returns how many.
  mutating func discardReceived() -> Int {
    var count = 0
    while let message = receiveQueue.popFirst() {
      receiveBytes -= message.count + SocketOptions.perMessageCost
      count += 1
    }
    return count
  }

  /// Whether reading should resume now (paused, and drained to the low
  /// watermark).
  var shouldResumeReading: Bool { readingPaused && receiveBytes <= options.receiveLowWatermark }

  mutating func takeNext() -> Result<ReceiveResult, SocketError> {
    if closedByUser { return .failure(.closed) }
    if let message = receiveQueue.popFirst() {
      receiveBytes -= message.count + SocketOptions.perMessageCost
      return .success(.message(message))
    }
    if let pendingError, !errorReported {
      errorReported = true
      return .failure(pendingError)
    }
    if receiveFinished || failed { return .success(.endOfStream) }
    return .success(.wouldBlock)
  }

  mutating func fail(_ error: SocketError) {
    guard !failed else { return }
    pendingError = error
    failed = true
    pendingSends = []
    sendBytes = 0
  }
}

/// The result of a non-blocking receive.
public enum ReceiveResult: Sendable, Hashable {
  /// The next message.
  case message([UInt8])
  /// Nothing queued yet.
  case wouldBlock
  /// No message will follow: the handler finished the stream, or the socket
  /// failed (after its error was received).
  case endOfStream
}
