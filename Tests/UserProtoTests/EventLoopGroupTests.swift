import Dispatch
import Glibc
import Synchronization
import TestSupport
import Testing

@_spi(Testing) @testable import UserProto

@Suite("Event loop group", .testThreads)
struct EventLoopGroupTests {
  private func makeGroup(_ backend: EventLoop.BackendChoice, count: Int) throws -> EventLoopGroup {
    if backend == .ioUring { try requireIoUring() }
    return try EventLoopGroup(count: count, configuration: .init(backend: backend, name: "group"))
  }

  @Test("next() hands out every loop in turn; each loop has its own thread", arguments: loopBackends)
  func roundRobin(backend: EventLoop.BackendChoice) throws {
    let group = try makeGroup(backend, count: 3)
    defer { group.shutdownAndWait() }
    #expect(group.loops.count == 3)
    #expect(group.loops.allSatisfy { $0.backend == (backend == .ioUring ? .ioUring : .epoll) })
    let picks = (0..<9).map { _ in group.next() }
    for i in 0..<9 { #expect(picks[i] === picks[i % 3], "pick \(i) repeats pick \(i % 3)") }
    #expect(Set(picks.prefix(3).map(ObjectIdentifier.init)).count == 3, "three distinct loops")
    let threads = try group.loops.map { loop in try onLoop(loop) { UInt(pthread_self()) } }
    #expect(Set(threads).count == 3)
    #expect(group.loops.map(\.name) == ["group-0", "group-1", "group-2"])
  }

  @Test("any() on one of the group's loops is that loop", arguments: loopBackends)
  func anyPrefersCurrent(backend: EventLoop.BackendChoice) throws {
    let group = try makeGroup(backend, count: 2)
    defer { group.shutdownAndWait() }
    for loop in group.loops {
      #expect(try onLoop(loop) { group.any() === loop })
    }
    #expect(group.loops.contains { $0 === group.any() }, "from elsewhere: one of the loops")
  }

  @Test("the default size is the number of CPUs")
  func defaultSize() throws {
    let group = try EventLoopGroup(configuration: .init(backend: .epoll))
    defer { group.shutdownAndWait() }
    #expect(group.loops.count == EventLoopGroup.defaultLoopCount)
    #expect(EventLoopGroup.defaultLoopCount == Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
  }

  @Test("shutdownAndWait stops every loop, with work in flight", arguments: loopBackends)
  func shutdownSync(backend: EventLoop.BackendChoice) throws {
    let group = try makeGroup(backend, count: 3)
    let ended = Collector<Int>()
    for loop in group.loops {
      try loop.schedule(atNanoseconds: EventLoop.now() + 60_000_000_000, {}, onShutdown: { ended.append(1) })
    }
    group.shutdownAndWait()
    #expect(group.isShutDown)
    #expect(ended.count == 3, "every loop's timers ended")
    for loop in group.loops { #expect(throws: LoopError.shutDown) { try loop.execute {} } }
    group.shutdownAndWait()  // idempotent
  }

  @Test("async shutdown stops every loop", arguments: loopBackends)
  func shutdownAsync(backend: EventLoop.BackendChoice) async throws {
    let group = try makeGroup(backend, count: 3)
    let sleepers = group.loops.map { loop in Task { try await loop.sleep(for: .seconds(60)) } }
    await group.shutdown()
    #expect(group.isShutDown)
    for sleeper in sleepers {
      await #expect(throws: LoopError.shutDown) { try await sleeper.value }
    }
  }

  @Test("automatic choice: every loop uses the engine the first one chose")
  func sameEngine() throws {
    var configuration = EventLoop.Configuration(backend: .automatic)
    configuration.honorsEnvironment = false
    // io_uring refused once: the first loop falls back, the others follow it
    // even though io_uring would now work for them.
    configuration.faults = LoopFaults()
    configuration.faults?.inject(.uringSetup, EPERM, times: 1)
    let group = try EventLoopGroup(count: 3, configuration: configuration)
    defer { group.shutdownAndWait() }
    #expect(group.loops.map(\.backend) == [.epoll, .epoll, .epoll])
    #expect(group.backendReason.contains("EPERM"))
  }

  @Test("a loop that cannot start fails the group and stops the loops already started")
  func partialFailure() throws {
    try requireIoUring()
    var configuration = EventLoop.Configuration(backend: .ioUring, name: "upgfail")
    configuration.honorsEnvironment = false
    configuration.faults = LoopFaults()
    // The first loop starts; the second one's ring set-up fails.
    configuration.faults?.inject(.uringSetup, ENOMEM, times: 1, after: 1)
    #expect(throws: IOError("io_uring_setup", ENOMEM)) {
      try EventLoopGroup(count: 3, configuration: configuration)
    }
    // The first loop's thread ("upgfail-0") ends: it was shut down.
    #expect(eventually { !threadNames().contains("upgfail-0") }, "\(threadNames())")
  }
}

/// The names of this process's threads.
private func threadNames() -> [String] {
  guard let dir = opendir("/proc/self/task") else { return [] }
  defer { closedir(dir) }
  var names: [String] = []
  while let entry = readdir(dir) {
    let task = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    guard task.first?.isNumber == true else { continue }
    let fd = open("/proc/self/task/\(task)/comm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { continue }
    var buffer = [UInt8](repeating: 0, count: 32)
    let n = read(fd, &buffer, buffer.count)
    close(fd)
    if n > 0 { names.append(String(decoding: buffer[0..<n], as: UTF8.self).trimmingSuffixNewline()) }
  }
  return names
}

extension String {
  fileprivate func trimmingSuffixNewline() -> String { hasSuffix("\n") ? String(dropLast()) : self }
}
