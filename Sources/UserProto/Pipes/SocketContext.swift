import Glibc

/// How a ``SocketHandler`` reaches its socket, on the loop.
///
/// Each hook is given the socket's context. A handler may keep it (it stays
/// the same object for the socket's life), but it works only on the
/// socket's event loop: every operation checks, and throws
/// ``SocketError/notOnLoop(_:)`` (or does nothing, where it cannot throw)
/// when called anywhere else or after the socket has finished. It is not
/// `Sendable`, so the compiler already refuses to hand it to another thread.
public final class SocketContext {
  private weak var core: SocketCore?
  /// The loop the socket runs on.
  public let loop: EventLoop
  /// The socket's buffer limits.
  public let options: SocketOptions
  private var timers: [ObjectIdentifier: HandlerTimer] = [:]

  init(core: SocketCore) {
    self.core = core
    loop = core.loop
    options = core.options
  }

  private func live(_ what: String) throws(SocketError) -> SocketCore {
    guard let core, loop.inEventLoop, core.handler != nil else { throw .notOnLoop(what) }
    return core
  }

  /// The socket's pipes that are up, oldest first. Empty off the loop.
  public var pipes: [SocketPipe] {
    guard let core, loop.inEventLoop else { return [] }
    return core.pipes
  }

  /// Queues a message for the application: it becomes readable.
  /// - Throws: ``SocketError/messageTooLarge(size:limit:)`` above the
  ///   maximum message size (let it propagate: the pipe fails);
  ///   ``SocketError/notOnLoop(_:)``.
  public func deliver(_ message: [UInt8]) throws(SocketError) {
    try live("SocketContext.deliver").deliver(message)
  }

  /// Sends still queued by the application are offered to the handler
  /// again (after it returned ``SendDisposition/wait``, once it can take
  /// one).
  public func resumeSends() throws(SocketError) {
    let core = try live("SocketContext.resumeSends")
    try? core.loop.enqueue { [weak core] in core?.offerSends() }
  }

  /// Ends the application's message stream: after the queued messages,
  /// receives return end-of-stream and the socket shows readable (for a
  /// one-peer protocol whose peer finished).
  public func finishReceiving() throws(SocketError) {
    try live("SocketContext.finishReceiving").update { s in s.receiveFinished = true }
  }

  /// Drops the received messages still queued for the application; returns
  /// how many.
  @discardableResult
  public func discardReceivedMessages() throws(SocketError) -> Int {
    let core = try live("SocketContext.discardReceivedMessages")
    let (count, resume) = core.update { s -> (Int, Bool) in (s.discardReceived(), s.shouldResumeReading) }
    if resume { core.resumeReadingSoon() }
    return count
  }

  /// Fails the whole socket: the application receives `error` once (error
  /// readiness until then), every pipe closes, dialers stop.
  public func fail(_ error: SocketError) throws(SocketError) {
    try live("SocketContext.fail").fail(error)
  }

  /// The socket's counters.
  public var statistics: SocketStatistics { core?.shared.withLock { $0.statistics } ?? SocketStatistics() }

  /// Starts a timer that calls ``SocketHandler/timerFired(_:context:)``.
  /// A delay too large to represent never fires.
  @discardableResult
  public func startTimer(after delay: Duration) throws(SocketError) -> HandlerTimer {
    let core = try live("SocketContext.startTimer")
    let timer = HandlerTimer(context: self)
    let weak = WeakLoopConfined(core)
    let box = LoopConfined(timer)
    do {
      timer.scheduled = try loop.schedule(after: delay) {
        guard let core = weak.value, !box.value.isCancelled else { return }
        box.value.fired()
        core.runHook { handler, context in handler.timerFired(box.value, context: context) }
      }
    } catch {
      throw .transport(IOError("event loop shut down", ESHUTDOWN))
    }
    timers[ObjectIdentifier(timer)] = timer
    return timer
  }

  func forget(_ timer: HandlerTimer) { timers.removeValue(forKey: ObjectIdentifier(timer)) }

  func cancelTimers() {
    for timer in timers.values { timer.cancel() }
    timers = [:]
  }
}

/// A timer started by a handler; cancel it on the loop.
public final class HandlerTimer {
  private weak var context: SocketContext?
  var scheduled: EventLoop.Scheduled?
  /// True once cancelled (or fired).
  public private(set) var isCancelled = false

  init(context: SocketContext) { self.context = context }

  /// Cancels the timer: ``SocketHandler/timerFired(_:context:)`` will not
  /// run for it.
  public func cancel() {
    guard !isCancelled else { return }
    isCancelled = true
    scheduled?.cancel()
    context?.forget(self)
  }

  func fired() {
    isCancelled = true
    context?.forget(self)
  }
}
