import Dispatch
import Glibc
import Locking
import Synchronization

// Shutdown: stopping the loop, waiting for it, and the queue that runs
// executor jobs once it has stopped.
extension EventLoop {
  /// Runs `job` on the serial after-shutdown queue.
  func runAfterShutdown(_ job: @escaping @Sendable () -> Void) {
    afterShutdown.async { [self] in
      fallbackThread.store(UInt(pthread_self()), ordering: .releasing)
      job()
      fallbackThread.store(0, ordering: .releasing)
    }
  }

  /// True while an executor job runs on the after-shutdown queue, on its thread.
  var runsAfterShutdownJob: Bool { fallbackThread.load(ordering: .acquiring) == UInt(pthread_self()) }

  /// Stops the loop: pending timers are cancelled, in-flight operations end
  /// with ECANCELED, tasks already queued run, and the thread exits. Safe
  /// from any thread except the loop's own; returns when the loop has stopped.
  public func shutdown() async {
    beginShutdown()
    if inEventLoop { return }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
      let done = exit.withLock { e -> Bool in
        if !e.done { e.continuations.append(c) }
        return e.done
      }
      if done { c.resume() }
    }
  }

  /// Stops the loop and blocks until it has stopped. Not on the loop.
  public func shutdownAndWait() {
    precondition(!inEventLoop, "shutdownAndWait() would deadlock on the loop's own thread")
    beginShutdown()
    let semaphore = DispatchSemaphore(value: 0)
    let done = exit.withLock { e -> Bool in
      if !e.done { e.semaphores.append(semaphore) }
      return e.done
    }
    if !done { semaphore.wait() }
  }

  /// True once the loop has stopped.
  public var isShutDown: Bool { exit.withLock { $0.done } }

  /// Marks the loop as shutting down; true for the first caller.
  @discardableResult
  func beginShutdown() -> Bool {
    let first = shared.withLock { s -> Bool in
      guard s.state == .running else { return false }
      s.state = .shuttingDown
      return true
    }
    if first { engine.wakeup() }
    return first
  }

  func drainForShutdown() {
    // Tasks queued before shutdown began may add timers: run them first;
    // a timer added after the clearing below ends at once (addTimer).
    runTasks()
    timersClosed = true
    timers.removeAll()
    let pending = timerActions.values
    timerActions.removeAll()
    for action in pending where action.state.fire() { action.onShutdown?() }
    // Cancel every operation and wait for the final completions, so that no
    // buffer is freed while the kernel may still write to it.
    for token in operations.liveTokens { engine.cancel(token: token) }
    var rounds = 0
    while operations.count > 0 && rounds < 1000 {
      runTasks()
      try? engine.wait(timeout: 10_000_000) { self.dispatch($0) }
      rounds += 1
    }
    for (_, handler) in operations.drain() { handler(.failed(IOError("shutdown", ECANCELED))) }
    runTasks()
    shared.withLock { $0.state = .shutDown }
    // Executor jobs taken until now run here; later ones go to
    // `afterShutdown`, which starts only after this last batch.
    runTasks()
    engine.close()
    threadID.store(0, ordering: .releasing)
    afterShutdown.activate()
    let (continuations, semaphores) = exit.withLock { e in
      e.done = true
      defer {
        e.continuations = []
        e.semaphores = []
      }
      return (e.continuations, e.semaphores)
    }
    for c in continuations { c.resume() }
    for s in semaphores { s.signal() }
  }
}
