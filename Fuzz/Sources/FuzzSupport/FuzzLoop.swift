import Dispatch

@testable public import UserProto

/// The event loop every input of a fuzzer runs on: one for the process
/// (a loop per input would cost a thread and its fds each time). epoll,
/// since the in-memory transports do no I/O and the choice of engine is
/// not what these targets explore. Its fds must be close-on-exec too.
public let fuzzLoop: EventLoop = {
  let before = Set(descriptorsWithoutCloseOnExec())
  let loop: EventLoop
  do {
    loop = try EventLoop(configuration: EventLoop.Configuration(backend: .epoll, name: "fuzz-loop"))
  } catch {
    fatalError("the fuzz loop cannot start: \(error)")
  }
  let fresh = Set(descriptorsWithoutCloseOnExec()).subtracting(before)
  fuzzCheck(fresh.isEmpty, "the event loop's descriptors without close-on-exec: \(fresh.sorted())")
  return loop
}()

/// Runs a fuzz program on ``fuzzLoop`` as a chain of loop tasks, and
/// blocks the calling (libFuzzer's) thread until the chain ends.
///
/// Each step runs in a task of its own, then hands over to the next after
/// `hops` more trips through the loop's task queue, so what a step set off
/// (a transfer between in-memory transports, a drain of the send queue, a
/// resumed read) runs in between, in the loop's order. Nothing else
/// enqueues work on this loop while the chain runs (the libFuzzer thread
/// only waits), and the timers the targets use are either immediate or
/// an hour away, so the interleaving is the same on every run of an input.
/// A check made inside a step is atomic with respect to the loop: no hook
/// runs while it looks.
public final class LoopScript: @unchecked Sendable {
  // The unchecked conformance: `done` is a semaphore; every other use of
  // the script happens on the loop's thread, inside the chain.
  private let loop: EventLoop
  private let done = DispatchSemaphore(value: 0)

  public init(loop: EventLoop = fuzzLoop) { self.loop = loop }

  /// Starts `first` on the loop and returns once ``finish()`` was called.
  public func run(_ first: @escaping () -> Void) {
    let box = LoopConfined(first)
    do {
      try loop.execute { box.value() }
    } catch {
      fatalError("the fuzz loop stopped: \(error)")
    }
    done.wait()
  }

  /// On the loop: runs `next` after `hops` trips through the task queue
  /// (0: in the next task).
  public func after(hops: Int, _ next: @escaping () -> Void) {
    do {
      try loop.enqueue { [self] in
        if hops > 0 { after(hops: hops - 1, next) } else { next() }
      }
    } catch {
      fatalError("the fuzz loop stopped: \(error)")
    }
  }

  /// On the loop: ends the chain; ``run(_:)`` returns two trips through
  /// the task queue later. The loop keeps each batch of tasks (and what
  /// their closures hold) until the whole batch has run: by then the
  /// chain's objects are gone, and libFuzzer's leak check, which runs as
  /// soon as the input returns, finds nothing of this input alive (a
  /// Swift object that is still alive can show up as a leak: LeakSanitizer
  /// does not see the encoded pointer to its weak-reference side table).
  public func finish() {
    after(hops: 1) { [done] in done.signal() }
  }
}
