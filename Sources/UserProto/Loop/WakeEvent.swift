import Glibc
import Locking

/// The eventfd other threads write to wake a sleeping loop.
///
/// Writers and the closer take the same lock, so once ``close()`` has run no
/// writer can still hold the number: a wake-up never lands in another file
/// that reused it.
final class WakeEvent: Sendable {
  private let fd: Lock<Int32>
  /// The fd number, for the loop thread only (it alone closes it).
  let loopFD: Int32

  /// - Parameter blocking: io_uring reads it with a READ that must wait,
  ///   so it must be blocking there; epoll reads it when readable.
  init(blocking: Bool) throws(IOError) {
    let created = try Sys.eventfd(nonBlocking: !blocking)
    fd = Lock(created)
    loopFD = created
  }

  /// Wakes the loop; does nothing once closed. Safe from any thread.
  func signal() {
    fd.withLock { fd in
      guard fd >= 0 else { return }
      Sys.signalEvent(fd)
    }
  }

  /// Waits up to `milliseconds` for a wake-up without consuming it (the
  /// engine's own read does that). Used to back off when the engine fails.
  func waitReadable(milliseconds: Int32) {
    do throws(IOError) {
      _ = try Sys.poll(loopFD, events: Int16(POLLIN), milliseconds: milliseconds)
    } catch {
      // The pause ends early: the loop's next wait reports the engine's
      // state, and the back-off goes on from there.
    }
  }

  func close() {
    fd.withLock { fd in
      guard fd >= 0 else { return }
      Sys.close(fd)
      fd = -1
    }
  }
}
