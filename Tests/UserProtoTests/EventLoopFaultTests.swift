import Glibc
import Testing

@_spi(Testing) @testable import UserProto

@Suite("epoll engine faults and engine selection")
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
