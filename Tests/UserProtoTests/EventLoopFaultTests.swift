import Glibc
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

@Suite("epoll engine faults and engine selection", .testThreads)
struct EventLoopFaultTests {
  @Test("epoll_ctl refusing a registration fails that operation only", arguments: [ENOMEM, ENOSPC])
  func epollCtlFailure(code: Int32) throws {
    let faults = LoopFaults()
    let loop = try makeTestLoop(.epoll, faults: faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let watchEvents = Collector<Int>()
    let thrown = try onLoop(loop) { () -> [Int32?] in
      var codes: [Int32?] = []
      for existing in [false, true] {
        if existing {
          // A live registration must survive a failed check for a second one.
          _ = try loop.watch(fd: a, events: [.readable]) { _ in watchEvents.append(1) }
        }
        faults.inject(.epollCtl, code)
        do {
          // A receive: sends skip the check on an fd that has an entry.
          _ = try loop.receive(socket: a) { _ in }
          codes.append(nil)
        } catch let error as IOError {
          codes.append(error.code)
        }
      }
      return codes
    }
    #expect(thrown == [code, code], "each receive failed with the injected errno")
    #expect(try onLoop(loop) { loop.operationsInFlight } == 1, "only the watch is registered")
    #expect(write(b, "w", 1) == 1)
    #expect(eventually { watchEvents.count > 0 }, "the watch survived the failed registration")
    var byte: UInt8 = 0
    #expect(read(a, &byte, 1) == 1)
    // The next registration works.
    let received = Collector<[UInt8]>()
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { received.append(bytes) }
      }
    }
    #expect(write(b, "ok", 2) == 2)
    #expect(eventually { received.values.joined().count == 2 })
  }

  /// A seccomp profile or a pre-5.11 kernel refusing epoll_pwait2: the
  /// engine goes on with epoll_wait (millisecond timeouts rounded up).
  @Test("epoll_pwait2 refused: the loop goes on with epoll_wait; I/O and timers work", arguments: [ENOSYS, EPERM])
  func pwait2Refused(code: Int32) throws {
    let faults = LoopFaults()
    // Every epoll_pwait2 call fails: only the switch keeps the loop alive.
    faults.inject(.epollWait, code, times: Int.max)
    let loop = try makeTestLoop(.epoll, faults: faults)
    defer { loop.shutdownAndWait() }
    let (a, b) = try streamPair()
    defer {
      close(a)
      close(b)
    }
    let received = Collector<[UInt8]>()
    _ = try onLoop(loop) {
      try loop.receive(socket: a) { result in
        if case .success(let bytes) = result { received.append(bytes) }
      }
    }
    #expect(write(b, "ok", 2) == 2)
    #expect(eventually { received.values.joined().count == 2 }, "I/O still completes")
    // Timers need the wait's timeout (nothing else wakes an idle loop).
    let fired = Collector<Int>()
    for i in 0..<20 {
      try loop.schedule(atNanoseconds: EventLoop.now() + 1_500_000) { fired.append(i) }
      #expect(eventually { fired.count == i + 1 }, "timer \(i) fired")
    }
  }

  @Test("unknown USERPROTO_LOOP_BACKEND values are named, not silently ignored")
  func environmentValues() {
    #expect(EventLoop.resolve(environment: "epoll").0 == .epoll)
    #expect(EventLoop.resolve(environment: "io_uring").0 == .ioUring)
    #expect(EventLoop.resolve(environment: "uring").0 == .ioUring)
    #expect(EventLoop.resolve(environment: "automatic") == (.automatic, ""))
    let (choice, note) = EventLoop.resolve(environment: "epol")
    #expect(choice == .automatic)
    #expect(note.contains("\"epol\"") && note.contains("ignored"), "\(note)")
  }
}
