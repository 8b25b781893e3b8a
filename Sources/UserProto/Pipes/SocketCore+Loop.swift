import Glibc
import Logging

/// The loop side of a socket: hooks, sends, deliveries, closing. Every
/// function here runs on the socket's loop.
///
/// Logging (docs/logging.md): what a line says is computed first and logged
/// at the top level of a function, never inside an `update` or `withLock`
/// closure, nor while an `inout` access (a handler's `&pipe.input`) is live.
/// Metrics (docs/metrics.md) likewise: an `update` closure returns what it
/// counted, and the counters are incremented after it returns.
extension SocketCore {
  /// Runs a hook; what it delivered is committed in one state update once
  /// the outermost hook returns.
  func runHook(_ body: (any SocketHandler, SocketContext) -> Void) {
    guard let handler else { return }
    hookDepth += 1
    body(handler, context)
    hookDepth -= 1
    if hookDepth == 0 { commitDeliveries() }
  }

  /// A message from the handler for the application (batched).
  func deliver(_ message: [UInt8]) throws(SocketError) {
    if message.count > options.maximumMessageSize {
      throw .messageTooLarge(size: message.count, limit: options.maximumMessageSize)
    }
    deliveries.append(message)
    if hookDepth == 0 { commitDeliveries() }
  }

  func commitDeliveries() {
    guard !deliveries.isEmpty else { return }
    let batch = deliveries
    deliveries = []
    let (cancels, handled) = (sendCancelsReceive, handledSends)
    // What was queued (messages, bytes) or dropped as stale, for the metrics.
    let (pause, queued, queuedBytes, stale) = update { s -> (Bool, Int, Int, Int) in
      if s.closedByUser || s.failed { return (false, 0, 0, 0) }
      if cancels && s.acceptedSends != handled {
        // The handler has not seen the application's latest send yet: what
        // it delivers answers an abandoned one.
        s.statistics.staleDrops += batch.count
        return (false, 0, 0, batch.count)
      }
      var bytes = 0
      for message in batch {
        s.receiveQueue.append(message)
        s.receiveBytes += message.count + SocketOptions.perMessageCost
        bytes += message.count
      }
      s.statistics.bytesReceived += bytes
      s.statistics.messagesReceived += batch.count
      guard s.receiveBytes >= s.options.receiveHighWatermark, !s.readingPaused else {
        return (false, batch.count, bytes, 0)
      }
      s.readingPaused = true
      return (true, batch.count, bytes, 0)
    }
    if let meters { meters.received(messages: queued, bytes: queuedBytes, stale: stale) }
    if pause { for pipe in allPipes.values { pipe.transport?.pauseReading() } }
  }

  /// Moves the application's sends to the loop and offers them.
  func drainSends() {
    let batch = update { s -> [[UInt8]] in
      s.drainScheduled = false
      let all = s.pendingSends
      s.pendingSends = []
      return all
    }
    for message in batch { outbox.append(message) }
    offerSends()
  }

  /// Offers queued sends to the handler until it waits or none is left.
  func offerSends() {
    guard !offering, handler != nil, !outbox.isEmpty else { return }
    offering = true
    defer { offering = false }
    var taken = 0
    var takenBytes = 0
    var failure: SocketError?
    runHook { handler, context in
      while let message = outbox.first {
        let disposition: SendDisposition
        do throws(SocketError) {
          disposition = try handler.send(message, context: context)
        } catch {
          failure = error
          break
        }
        guard disposition == .taken else { break }
        _ = outbox.popFirst()
        handledSends &+= 1
        taken += 1
        takenBytes += message.count
      }
    }
    if taken > 0 {
      update { s in
        s.sendBytes = max(0, s.sendBytes - takenBytes - taken * SocketOptions.perMessageCost)
        s.statistics.messagesSent += taken
        s.statistics.bytesSent += takenBytes
        s.updateWritableLatch()
      }
      if let meters { meters.sent(messages: taken, bytes: takenBytes) }
    }
    if let failure { fail(failure) }
  }

  /// The whole socket fails: the application sees `error` once, queued
  /// sends are dropped, every pipe closes.
  func fail(_ error: SocketError) {
    let firstFailure = update { s -> Bool in
      let wasFailed = s.failed
      s.fail(error)
      return !wasFailed
    }
    if firstFailure { logger.notice("socket failed", metadata: ["error": "\(error)"]) }
    outbox.removeAll()
    stopEndpoints()
    for pipe in Array(allPipes.values) { removePipe(pipe, error: nil, notify: true) }
  }

  // MARK: Pipes

  /// Makes a pipe over `transport` and starts it; it is shown to the
  /// handler once connected.
  @discardableResult
  func attach(_ transport: any Transport, dialer: Dialer?, url: TransportURL) -> SocketPipe {
    nextPipeID += 1
    let pipe = SocketPipe(id: nextPipeID, core: self, transport: transport, dialer: dialer, url: url)
    allPipes[ObjectIdentifier(pipe)] = pipe
    if shared.withLock({ $0.readingPaused }) { transport.pauseReading() }
    transport.start(pipe)
    return pipe
  }

  func pipeConnected(_ pipe: SocketPipe) {
    guard !closing, handler != nil else {
      removePipe(pipe, error: nil, notify: false)
      return
    }
    pipes.append(pipe)
    pipe.dialer?.connected()
    let count = pipes.count
    update { s in
      s.statistics.pipes = count
      s.statistics.pipesAdded += 1
    }
    if let meters { meters.pipeAdded(count: count) }
    logger.debug("pipe added", metadata: pipe.logMetadata())
    runHook { handler, context in handler.pipeAdded(pipe, context: context) }
    offerSends()
  }

  func pipeReceived(_ pipe: SocketPipe, _ bytes: [UInt8]) {
    guard pipe.isUp, !closing else { return }  // a closing socket discards input
    pipe.input.append(bytes)
    // The handler parses a buffer moved out of the pipe for the call (a
    // swap: no copy), so a pipe closed from inside it (``SocketPipe/close``,
    // a write that fails at once) can release its own, empty, input instead
    // of the buffer being parsed, which would be an overlapping access.
    var input = InboundBuffer()
    swap(&input, &pipe.input)
    var failure: SocketError?
    runHook { handler, context in
      do throws(SocketError) {
        try handler.received(&input, from: pipe, context: context)
      } catch {
        failure = error
      }
    }
    // A pipe that went meanwhile keeps nothing.
    if pipe.isUp && !pipe.isDatagram { swap(&input, &pipe.input) }
    if let failure { removePipe(pipe, error: failure, notify: true) }
  }

  func pipeReachedEnd(_ pipe: SocketPipe) {
    pipe.peerEnded = true
    if closing {
      finishPipeIfDone(pipe)
      return
    }
    guard pipe.isUp else { return }
    var failure: SocketError?
    runHook { handler, context in
      do throws(SocketError) {
        try handler.pipeReachedEnd(pipe, input: pipe.input, context: context)
      } catch {
        failure = error
      }
    }
    if let failure { removePipe(pipe, error: failure, notify: true) }
  }

  func pipeWritable(_ pipe: SocketPipe) {
    guard pipe.isUp, !closing else { return }
    runHook { handler, context in handler.pipeWritable(pipe, context: context) }
    offerSends()
  }

  /// Removes a pipe: closes its transport, tells the handler (when it had
  /// seen the pipe), and lets its dialer re-dial.
  func removePipe(_ pipe: SocketPipe, error: SocketError?, notify: Bool) {
    guard allPipes.removeValue(forKey: ObjectIdentifier(pipe)) != nil else { return }
    let wasUp = pipe.isUp
    logRemoval(of: pipe, error: error, wasUp: wasUp)
    pipe.finish()
    if wasUp {
      pipes.removeAll { $0 === pipe }
      let (count, failed) = (pipes.count, error != nil)
      update { s in
        s.statistics.pipes = count
        s.statistics.pipesRemoved += 1
        if failed { s.statistics.pipeFailures += 1 }
      }
      if let meters { meters.pipeRemoved(count: count, failed: failed) }
      if notify && !closing {
        runHook { handler, context in handler.pipeRemoved(pipe, error: error, context: context) }
      }
    }
    pipe.dialer?.pipeGone(wasUp: wasUp)
    if closing && allPipes.isEmpty { finish() }
  }

  /// One line per pipe removed: a pipe that was up and failed is a notice
  /// (the peer reset, broke the protocol, ...: the reason is in `error`); a
  /// pipe removed without an error, or a dial attempt that failed before
  /// the pipe was up (connection refused: the dialer logs its re-dial
  /// next), is debug, as a dead peer re-dialed every 100 ms would otherwise
  /// flood the log.
  ///
  /// The metadata is built only when the level is enabled (the logger's
  /// autoclosure).
  private func logRemoval(of pipe: SocketPipe, error: SocketError?, wasUp: Bool) {
    if error == nil {
      logger.debug("pipe removed", metadata: pipe.logMetadata())
    } else if wasUp {
      logger.notice("pipe failed", metadata: pipe.logMetadata(error: error))
    } else {
      logger.debug("pipe failed to connect", metadata: pipe.logMetadata(error: error))
    }
  }

  // MARK: Closing

  func stopEndpoints() {
    for dialer in dialers { dialer.stop() }
    dialers = []
    for listener in listeners { listener.close() }
    listeners = []
  }

  /// Graceful close: accepted sends are offered once more, every pipe's
  /// write side shuts down after its queued output, and the socket finishes
  /// when every pipe is done (its output out and its peer finished), or
  /// after ``SocketOptions/closeLinger`` (5 s by default).
  func beginClose() {
    guard !closing, handler != nil else { return }
    drainSends()
    closing = true
    stopEndpoints()
    runHook { handler, context in handler.socketClosing(context: context) }
    outbox.removeAll()
    if allPipes.isEmpty {
      finish()
      return
    }
    keepAliveWhileClosing = self
    let weak = WeakLoopConfined(self)
    lingerTimer = try? loop.schedule(after: options.closeLinger) { weak.value?.finish() }
    for pipe in Array(allPipes.values) {
      if pipe.isUp {
        pipe.transport?.shutdownWrite()
        pipe.transport?.resumeReading()  // see the peer's end even if paused
      } else {
        removePipe(pipe, error: nil, notify: false)  // still connecting
      }
    }
  }

  func finishPipeIfDone(_ pipe: SocketPipe) {
    guard closing, pipe.outputFinished, pipe.peerEnded || pipe.isDatagram else { return }
    removePipe(pipe, error: nil, notify: false)
  }

  /// Ends everything now: pipes, dialers, listeners, timers; the handler is
  /// released.
  func finish() {
    // Nil once finished: the first call logs.
    let first = handler != nil
    let remaining = allPipes.count
    closing = true
    lingerTimer?.cancel()
    lingerTimer = nil
    stopEndpoints()
    for pipe in Array(allPipes.values) {
      allPipes.removeValue(forKey: ObjectIdentifier(pipe))
      pipe.finish()
    }
    pipes = []
    outbox.removeAll()
    deliveries = []
    context.cancelTimers()
    handler = nil
    update { s in s.statistics.pipes = 0 }
    // The pipes ended here are not counted as removed (as in the statistics).
    if first, let meters { meters.finished() }
    keepAliveWhileClosing = nil
    if first { logger.debug("socket closed", metadata: ["socket.pipes_closed": "\(remaining)"]) }
    isFinished = true
    resumeFinishWaiters()
  }

  func resumeFinishWaiters() {
    let waiters = finishWaiters
    finishWaiters = []
    for waiter in waiters {
      waiter.shutdownGuard?.cancel()
      waiter.continuation.resume()
    }
  }

  /// Returns once ``finish()`` has run (at once if it has), or once the
  /// loop shuts down (which ends every operation of the socket).
  func waitFinished() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      do {
        try loop.execute { [self] in
          if isFinished {
            continuation.resume()
            return
          }
          // A timer that never fires: its onShutdown runs if the loop stops
          // before the socket finishes.
          let weak = WeakLoopConfined(self)
          let shutdownGuard = try? loop.schedule(
            atNanoseconds: .max, {}, onShutdown: { weak.value?.resumeFinishWaiters() })
          finishWaiters.append((continuation, shutdownGuard))
        }
      } catch {
        continuation.resume()  // the loop has stopped
      }
    }
  }
}
