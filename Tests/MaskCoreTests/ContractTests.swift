import CUserProtoShim
import Glibc
import TestSupport
import Testing

@testable import MaskCore

/// The consumer contract: a consumer that reads or writes the fd, fork(),
/// descriptor costs, and the probe against the patches that reuse the flag.
@Suite("Consumer contract", .testThreads)
struct ContractTests {
  static func layoutName(_ layout: MaskLayout) -> String {
    switch layout {
    case .kernel: "kernel"
    case .module: "module"
    case .emulation(let e): e.rawValue
    }
  }

  /// A consumer that reads the fd (an event loop that reads every readable
  /// fd) or takes its error; `resync()` puts the last-set state back.
  static func resyncAfterConsumerRead(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let events: MaskEvents = [.readable, .writable, .error]
    try mask.set(events, data: 77)
    #expect(try mask.resync() == false, "nothing drifted: nothing to repair")
    // The consumer reads: 12 bytes on the kernel backend (consumes nothing),
    // the error and then the datagram on the emulation.
    var buffer = [UInt8](repeating: 0, count: 64)
    if hasRecord(layout) {
      #expect(read(mask.fileDescriptor, &buffer, buffer.count) == 12, "a read never blocks on the kernel backend")
    } else {
      // recv, not read: the fd is blocking, and its data field is also its
      // SO_RCVTIMEO, so a read with nothing queued would wait.
      #expect(recv(mask.fileDescriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT)) == -1, "the error comes first")
      #expect(recv(mask.fileDescriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT)) == 0, "then the empty datagram")
      #expect(try mask.readBack().events == [.writable], "the consumer's reads cleared POLLIN and POLLERR")
    }
    let drifted = try mask.resync()
    if hasRecord(layout) {
      #expect(!drifted, "reads consume nothing on the kernel backend")
    } else {
      #expect(drifted, "reads consumed POLLIN and POLLERR on the emulation")
    }
    #expect(try mask.readBack() == MaskState(events: events, data: 77))
    #expect(try mask.resync() == false)
  }

  @Test("resync() repairs what a consumer's reads consumed", arguments: emulationLayouts)
  func resync(layout: MaskLayout) throws { try ContractTests.resyncAfterConsumerRead(layout) }

  /// A mask fd created before fork() may not be changed by the child; the
  /// child still reads it, and the parent keeps working.
  static func forkedChild(_ layout: MaskLayout) throws {
    let (status, values) = try runHelper(["fork", layoutName(layout)])
    #expect(status == 0, "helper output \(values)")
    #expect(values["child_refused"] == "true", "the child's set() throws .forkedChild: \(values)")
    #expect(values["child_events"] == "5" && values["child_data"] == "feed", "the child reads the state: \(values)")
    #expect(values["parent_events"] == "4" && values["parent_data"] == "beef", "the parent still sets it: \(values)")
  }

  @Test("a forked child may read but not change the mask fd", arguments: emulationLayouts)
  func fork(layout: MaskLayout) throws { try ContractTests.forkedChild(layout) }

  /// `descriptorCount` is what the fds really cost, every one close-on-exec,
  /// also after POLLERR names the emulation's sockets.
  static func descriptorCost(_ layout: MaskLayout) throws {
    let (status, values) = try runHelper(["count", layoutName(layout), "50"])
    #expect(status == 0, "helper output \(values)")
    #expect(values["added"] == "\(50 * layout.descriptorCount)", "\(values)")
    #expect(values["declared"] == "\(layout.descriptorCount)")
    #expect(values["all_cloexec"] == "true", "every internal fd is close-on-exec: \(values)")
  }

  @Test("descriptorCount is the real fd cost; every fd is close-on-exec", arguments: emulationLayouts)
  func cost(layout: MaskLayout) throws { try ContractTests.descriptorCost(layout) }

  @Test("creating a pair-layout mask binds no socket name; the first POLLERR does")
  func lazyNames() throws {
    let mask = try Sys.withInjectedFault("bind(autobind)", errno: EADDRINUSE) {
      try MaskFD(backend: .emulation(.pair))
    }
    defer { try? mask.close() }
    try mask.set([.readable, .writable], data: 1)
    Sys.withInjectedFault("bind(autobind)", errno: EADDRINUSE) {
      #expect(throws: MaskError.system(operation: "bind(autobind)", errno: EADDRINUSE)) {
        try mask.set([.writable, .error], data: 2)
      }
    }
    #expect(try mask.get() == MaskState(events: [.readable, .writable], data: 1), "nothing changed")
    #expect(try mask.readBack() == MaskState(events: [.readable, .writable], data: 1))
    try mask.set([.writable, .error], data: 2)
    #expect(try mask.readBack() == MaskState(events: [.writable, .error], data: 2))
    try mask.set([.readable, .writable], data: 3)
    #expect(try mask.readBack() == MaskState(events: [.readable, .writable], data: 3))
  }

  @Test("an unknown MASKCORE_BACKEND value is a clear error")
  func badEnvironment() throws {
    #expect(throws: MaskError.self) { try MaskFD.choose(.automatic, usage: .socket, override: "kernle") }
    do {
      _ = try MaskFD.choose(.automatic, usage: .socket, override: "kernle")
    } catch {
      #expect("\(error)".contains("MASKCORE_BACKEND=kernle"))
    }
    #expect(try MaskFD.choose(.automatic, usage: .socket, override: "pair").0 == .emulation(.pair))
    #expect(try MaskFD.choose(.automatic, usage: .anyEvents, override: "automatic").0 != .emulation(.pair))
  }

  @Test("inspect refuses sockets that cannot be mask fds")
  func inspectRefusesOtherSockets() throws {
    for (domain, type) in [(AF_INET, SOCK_STREAM), (AF_INET, SOCK_DGRAM), (AF_UNIX, SOCK_STREAM)] {
      let fd = socket(domain, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      try #require(fd >= 0)
      defer { close(fd) }
      #expect(throws: MaskError.self, "domain \(domain) type \(type)") { try MaskFD.inspect(descriptor: fd) }
    }
  }
}

/// The probe's decision against the other patches that reuse flag 1 << 1.
@Suite("Kernel probe against impostors", .testThreads)
struct ProbeImpostorTests {
  /// An fd behaving like the seed's EFD_MASK, with switches that turn it
  /// into one of the other patches.
  final class FakeTarget: ProbeTarget {
    var events: UInt32 = 0
    var data: UInt64 = 0
    var writeSize = 12  // the 2015 EFD_MASK v3 takes 4-byte writes
    var refuseReads = false  // ... and refuses reads
    var refuseTwelveByteWrites = false  // EFD_VPOLL takes 8-byte commands
    var readSize = 12  // a counter-style read returns 8 bytes
    var extraPollBits: UInt32 = 0  // a counter eventfd is always POLLOUT
    var acceptInvalidBits = false
    var initialEvents: UInt32 = 0

    init() {}

    func write(_ events: UInt32, _ data: UInt64) -> Int {
      if refuseTwelveByteWrites { return -Int(EINVAL) }
      if events & ~MaskEvents.all.rawValue != 0 && !acceptInvalidBits { return -Int(EINVAL) }
      self.events = events
      if writeSize == 12 { self.data = data }
      return writeSize
    }

    func read(_ events: inout UInt32, _ data: inout UInt64) -> Int {
      if refuseReads { return -Int(EINVAL) }
      events = self.events | initialEvents
      data = self.data
      return readSize
    }

    func poll() -> UInt32? { (events | initialEvents | extraPollBits) & MaskEvents.all.rawValue }
  }

  @Test("a seed-like fd passes (positive control)")
  func seedPasses() {
    let verdict = KernelProbe.evaluate(FakeTarget())
    #expect(verdict.isAvailable, "\(verdict.reason)")
  }

  @Test(
    "each impostor is refused with the deviation named",
    arguments: [
      ("refused reads (2015 EFD_MASK v3)", "read failed"),
      ("4-byte writes (2015 EFD_MASK v3)", "write returned 4"),
      ("8-byte commands (EFD_VPOLL)", "write failed"),
      ("8-byte commands, longer writes taken as 8 (EFD_VPOLL)", "write returned 8"),
      ("8-byte reads (a counter eventfd)", "read returned 8"),
      ("always writable (a counter eventfd)", "poll"),
      ("invalid bits accepted", "invalid bit"),
      ("events on a new fd", "new fd"),
    ])
  func impostor(kind: String, expected: String) {
    let fake = FakeTarget()
    switch kind {
    case "refused reads (2015 EFD_MASK v3)": fake.refuseReads = true
    case "4-byte writes (2015 EFD_MASK v3)": fake.writeSize = 4
    case "8-byte commands (EFD_VPOLL)": fake.refuseTwelveByteWrites = true
    case "8-byte commands, longer writes taken as 8 (EFD_VPOLL)": fake.writeSize = 8
    case "8-byte reads (a counter eventfd)": fake.readSize = 8
    case "always writable (a counter eventfd)": fake.extraPollBits = MaskEvents.writable.rawValue
    case "invalid bits accepted": fake.acceptInvalidBits = true
    default: fake.initialEvents = MaskEvents.readable.rawValue
    }
    let verdict = KernelProbe.evaluate(fake)
    #expect(!verdict.isAvailable, "\(kind) must not be taken for EFD_MASK")
    #expect(verdict.reason.contains(expected), "\(kind): \(verdict.reason)")
    #expect(verdict.reason.contains("another patch may reuse the bit"))
  }
}
