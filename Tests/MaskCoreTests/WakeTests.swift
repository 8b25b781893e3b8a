import CUserProtoShim
import Dispatch
import Glibc
import MaskCore
import Synchronization
import TestSupport
import Testing

/// A thread blocked in epoll_wait or poll wakes when another thread sets a bit.
@Suite("Wake-ups", .testThreads)
struct WakeTests {
  /// Blocks in `wait` on a background thread, sets `events` from this one,
  /// and returns what the blocked thread saw (nil when it timed out).
  ///
  /// On the emulation a change of several bits takes several syscalls, so
  /// the waiter may wake on the first bit: it must see a subset of the
  /// target, and then the whole target on its next waits, never a bit
  /// outside it.
  static func blockedWaiterSees(
    _ mask: MaskFD, setting events: MaskEvents, wait: @escaping @Sendable (Int32) -> MaskEvents?
  ) -> MaskEvents? {
    let first = blockedWaiterFirstWake(mask, setting: events, wait: wait)
    guard let first else { return nil }
    #expect(events.isSuperset(of: first), "woken with \(first), outside \(events)")
    var seen = first
    for _ in 0..<100 where seen != events {
      guard let next = wait(mask.fileDescriptor) else { return nil }
      #expect(events.isSuperset(of: next))
      seen = next
    }
    return seen
  }

  static func blockedWaiterFirstWake(
    _ mask: MaskFD, setting events: MaskEvents, wait: @escaping @Sendable (Int32) -> MaskEvents?
  ) -> MaskEvents? {
    let fd = mask.fileDescriptor
    let result = ResultBox()
    let started = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
      started.signal()
      result.value = wait(fd)
      done.signal()
    }
    started.wait()
    usleep(20_000)  // let it block; correctness does not depend on this
    try? mask.set(events)
    done.wait()
    return result.value
  }

  final class ResultBox: @unchecked Sendable { var value: MaskEvents? }

  static func epollWaitWakes(_ layout: MaskLayout) throws {
    for events: MaskEvents in [[.readable], [.writable], [.error, .writable], [.readable, .hangup, .writable]]
    where layout.fidelity(events) != .unsupported {
      let mask = try makeMask(layout)
      defer { try? mask.close() }
      let seen = blockedWaiterSees(mask, setting: events) { fd in
        let epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        defer { close(epfd) }
        var event = epoll_event()
        event.events = MaskEvents.all.rawValue
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event)
        var out = epoll_event()
        var n: Int32
        repeat { n = epoll_wait(epfd, &out, 1, 10_000) } while n < 0 && errno == EINTR
        if n < 0 { Issue.record("epoll_wait errno \(errno), epoll_create1 gave \(epfd)") }
        return n == 1 ? MaskEvents(rawValue: out.events & MaskEvents.all.rawValue) : nil
      }
      #expect(seen == events, "epoll_wait woken by \(events) on \(layout)")
    }
  }

  static func pollWakes(_ layout: MaskLayout) throws {
    for events: MaskEvents in [[.readable], [.writable], [.readable, .writable]] {
      let mask = try makeMask(layout)
      defer { try? mask.close() }
      let seen = blockedWaiterSees(mask, setting: events) { fd in
        var entry = pollfd(fd: fd, events: Int16(MaskEvents.all.rawValue), revents: 0)
        var n: Int32
        repeat { n = poll(&entry, 1, 10_000) } while n < 0 && errno == EINTR
        if n < 0 { Issue.record("poll errno \(errno)") }
        return n == 1 ? MaskEvents(rawValue: UInt32(UInt16(bitPattern: entry.revents)) & MaskEvents.all.rawValue) : nil
      }
      #expect(seen == events, "poll woken by \(events) on \(layout)")
    }
  }

  @Test("a thread blocked in epoll_wait wakes", arguments: emulationLayouts)
  func epollWait(layout: MaskLayout) throws { try WakeTests.epollWaitWakes(layout) }

  @Test("a thread blocked in poll wakes", arguments: emulationLayouts)
  func pollWait(layout: MaskLayout) throws { try WakeTests.pollWakes(layout) }

  @Test("concurrent setters from many threads leave a consistent state", arguments: emulationLayouts)
  func concurrentSetters(layout: MaskLayout) throws {
    try WakeTests.concurrentSetters(layout)
  }

  static func concurrentSetters(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let states: [MaskEvents] = [[], [.readable], [.writable], [.readable, .writable]]
    let failures = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: 8) { worker in
      var generator = SplitMix64(seed: UInt64(worker))
      for _ in 0..<500 {
        do {
          try mask.set(states[Int(generator.next() % 4)], data: generator.next())
        } catch {
          failures.add(1, ordering: .relaxed)
        }
      }
    }
    #expect(failures.load(ordering: .relaxed) == 0, "every set from every thread succeeded")
    let last = try mask.get()
    #expect(try mask.readBack() == last, "the fd shows the last state set")
  }
}
