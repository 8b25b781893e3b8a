import Dispatch
import Glibc
import Locking
import Synchronization
import TestSupport
import Testing

@testable import UserProto

/// Fails a test that would otherwise block forever: after `seconds`, its
/// fd (one end of a socket pair) becomes readable, so a thread blocked in poll(2)
/// on it next to the fds under test wakes and gives up.
final class Watchdog: Sendable {
  private let fds: (read: Int32, write: Int32)
  private let state = Lock<(disarmed: Bool, fired: Bool)>((false, false))

  init(seconds: Int) throws {
    let (read, write) = try streamPair()
    fds = (read, write)
    DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(seconds)) { [self] in fire() }
  }

  deinit {
    close(fds.read)
    close(fds.write)
  }

  /// Readable once the watchdog fired.
  var fileDescriptor: Int32 { fds.read }
  var fired: Bool { state.withLock { $0.fired } }

  private func fire() {
    state.withLock { s in
      guard !s.disarmed else { return }
      s.fired = true
      var byte: UInt8 = 1
      _ = write(fds.write, &byte, 1)
    }
  }

  func disarm() { state.withLock { $0.disarmed = true } }

  /// Waits without a timeout until `fd` shows one of `events`; false if the
  /// watchdog fired first.
  func wait(_ fd: Int32, _ events: Int32) -> Bool {
    var entries = [
      pollfd(fd: fd, events: Int16(events), revents: 0),
      pollfd(fd: fds.read, events: Int16(POLLIN), revents: 0),
    ]
    while true {
      let n = poll(&entries, 2, -1)
      if n < 0 && errno == EINTR { continue }
      if entries[1].revents != 0 { return false }
      return true
    }
  }
}

/// A thread of its own (not a dispatch worker, whose pool may not grow for
/// threads that spin); `join()` waits for its result.
final class OSThread<T: Sendable>: @unchecked Sendable {
  private final class Box: Sendable {
    let value = Lock<T?>(nil)
  }
  private let box = Box()
  private var thread = pthread_t()

  init(_ body: @escaping @Sendable () -> T) {
    let box = self.box
    let start = ThreadStart { box.value.withLock { $0 = body() } }
    let rc = pthread_create(&thread, nil, threadEntry, Unmanaged.passRetained(start).toOpaque())
    precondition(rc == 0, "pthread_create failed: \(rc)")
  }

  func join() -> T {
    pthread_join(thread, nil)
    return box.value.withLock { $0! }
  }
}

private final class ThreadStart: Sendable {
  let body: @Sendable () -> Void
  init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

private func threadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
  Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue().body()
  return nil
}

@Suite("Protocol socket races", .testThreads)
struct SocketRaceTests {
  /// close() or abort() from one thread while others send and receive:
  /// no crash, each call ends with a clear error, every fd is released.
  @Test(
    "close and abort race sends and receives on other threads", arguments: loopBackends, Transport.allCases)
  func closeRacesIO(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    for round in 0..<20 {
      let (a, b) = try socketPair(transport, loop)
      let useAbort = round % 2 == 1
      let started = DispatchSemaphore(value: 0)
      let sender = OSThread { () -> SocketError? in
        started.signal()
        while true {
          do throws(SocketError) { _ = try a.trySend([UInt8(round), 1, 2]) } catch { return error }
        }
      }
      let receiver = OSThread { () -> SocketError? in
        started.signal()
        while true {
          do throws(SocketError) { _ = try a.tryReceive() } catch { return error }
        }
      }
      let peer = OSThread { () -> Bool in
        started.signal()
        for i in 0..<200 { _ = try? b.trySend([UInt8(i)]) }
        return true
      }
      for _ in 0..<3 { started.wait() }
      if useAbort { a.abort() } else { try a.close() }
      #expect(sender.join() == .closed, "round \(round): sends end with .closed")
      #expect(receiver.join() == .closed, "round \(round): receives end with .closed")
      _ = peer.join()
      #expect(a.mask.isClosed)
      b.abort()
      // Both connections end (a graceful close finishes at the peer's end),
      // releasing their transports and fds.
      #expect(
        eventually { (try? onLoop(loop) { a.transport == nil && b.transport == nil }) == true },
        "round \(round): transports released")
    }
  }
}

/// Counts ``willSend(_:)`` calls; frames like ``FramedSocket``.
final class WillSendCountingSocket: ProtocolSocket, @unchecked Sendable {
  let willSendCalls = Atomic<Int>(0)
  override func willSend(_ message: [UInt8]) throws(SocketError) -> [UInt8] {
    willSendCalls.add(1, ordering: .relaxed)
    return message
  }
  override func encode(_ message: [UInt8]) throws -> [UInt8] { frame(message) }
}

@Suite("Protocol socket sender races", .testThreads)
struct SocketSenderRaceTests {
  /// Four threads fill a small queue at once. Every willSend that ran must
  /// belong to a send that was queued: a protocol commits state there (REQ
  /// its request id), so a willSend followed by would-block loses a reply.
  @Test("concurrent senders: willSend runs exactly once per send that is queued", arguments: loopBackends)
  func willSendMatchesQueuedSends(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(sendHighWatermark: 4096, sendLowWatermark: 1024)
    for round in 0..<10 {
      let (a, b) = try makeSocketPair(WillSendCountingSocket.self, loop: loop, options: options)
      let threads = (0..<4).map { t in
        OSThread { () -> Int in
          var queued = 0
          for i in 0..<2000 where (try? a.trySend([UInt8(t), UInt8(i & 0xff)])) == true { queued += 1 }
          return queued
        }
      }
      let queued = threads.map { $0.join() }.reduce(0, +)
      #expect(queued > 0, "round \(round)")
      #expect(a.willSendCalls.load(ordering: .relaxed) == queued, "round \(round): willSend calls vs queued sends")
      a.abort()
      b.abort()
    }
  }
}

@Suite("Protocol socket readiness races", .testThreads)
struct SocketReadinessRaceTests {
  /// The loop queues the last message and end-of-stream while the
  /// application drains them; once `tryReceive` has returned end-of-stream
  /// the mask fd must already be readable, not a moment later when the loop
  /// thread gets round to writing it (found by ThreadSanitizer runs: the
  /// half-close test saw POLLOUT alone about one run in five).
  @Test(
    "the mask fd is readable as soon as tryReceive has returned end-of-stream",
    arguments: loopBackends, Transport.allCases)
  func endOfStreamReadableAtOnce(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    var stale = 0
    for round in 0..<200 {
      let (a, b) = try socketPair(transport, loop)
      defer {
        a.abort()
        b.abort()
      }
      #expect(try a.trySend([UInt8(truncatingIfNeeded: round)]))
      try a.shutdownWrite()
      var received: [ProtocolSocket.ReceiveResult] = []
      let deadline = EventLoop.now() + 10_000_000_000
      while received.last != .endOfStream, EventLoop.now() < deadline {
        let result = try b.tryReceive()
        if result != .wouldBlock { received.append(result) }
      }
      if !pollEvents(b.fileDescriptor).contains(.readable) { stale += 1 }
      #expect(received == [.message([UInt8(truncatingIfNeeded: round)]), .endOfStream], "round \(round)")
    }
    #expect(stale == 0, "rounds where the mask fd lagged end-of-stream")
  }
}
