import TestSupport
import Testing

@testable import MaskCore

/// The number of system calls each transition makes: one for a readable or
/// writable transition (two documented exceptions on the emulation), none
/// when nothing changes.
@Suite("Syscalls per transition", .testThreads)
struct SyscallCostTests {
  static func cost(_ mask: MaskFD, _ events: MaskEvents, data: UInt64? = nil) throws -> Int {
    try Sys.countingSyscalls { try mask.set(events, data: data) }
  }

  static func emulationCosts(_ layout: EmulationLayout) throws {
    let mask = try MaskFD(backend: .emulation(layout))
    defer { try? mask.close() }
    #expect(try cost(mask, []) == 0, "unchanged")
    #expect(try cost(mask, [.readable]) == 1, "POLLIN on")
    #expect(try cost(mask, []) == 1, "POLLIN off")
    #expect(try cost(mask, [.writable]) == 1, "POLLOUT on")
    #expect(try cost(mask, []) == 1, "POLLOUT off")
    #expect(try cost(mask, [.writable]) == 1, "POLLOUT on again")
    #expect(try cost(mask, [.writable, .readable]) == 1, "POLLIN on beside POLLOUT")
    #expect(try cost(mask, [.writable, .readable]) == 0, "unchanged")
    #expect(try cost(mask, [.writable]) == 1, "POLLIN off beside POLLOUT")
    #expect(try cost(mask, [.writable], data: 0x1_0000_0001) == 2, "data: both halves")
    #expect(try cost(mask, [.writable], data: 0x1_0000_0002) == 1, "data: low half")
    // The first POLLERR names a and b (bind + getsockname each); full also
    // primes b's queue (disconnect, send to itself, reconnect).
    #expect(try cost(mask, [.writable, .error]) == (layout == .pair ? 4 + 3 : 4 + 3 + 3), "first POLLERR on")
    #expect(try cost(mask, [.writable]) == 1, "POLLERR off")
    #expect(try cost(mask, [.writable, .error]) == 3, "POLLERR on")
    #expect(try cost(mask, [.writable, .error, .readable]) == 1, "POLLIN on beside POLLERR")
    // recv returns (and clears) the pending error before the datagram, so
    // the error is raised again: 2 recvs + 3.
    #expect(try cost(mask, [.writable, .error]) == 5, "POLLIN off beside POLLERR")
    #expect(try mask.readBack().events == [.writable, .error])
    #expect(try cost(mask, [.writable]) == 1, "POLLERR off")
    #expect(try cost(mask, [.writable, .error, .priority]) == 4, "POLLERR|POLLPRI on")
    #expect(try cost(mask, [.writable, .error]) == 1, "POLLPRI off")
    #expect(try cost(mask, [.writable]) == 1, "POLLERR off")
    // After POLLERR the pair layout has lost its parked datagram: parking
    // again costs one more call, once.
    #expect(try cost(mask, []) == (layout == .pair ? 2 : 1), "POLLOUT off after POLLERR")
    #expect(try cost(mask, [.writable]) == 1)
    #expect(try cost(mask, []) == 1)
  }

  @Test("emulation: syscalls per transition", arguments: EmulationLayout.allCases)
  func emulation(layout: EmulationLayout) throws { try SyscallCostTests.emulationCosts(layout) }

  @Test(
    "kernel: one write per transition, none when unchanged",
    .enabled(if: kernelUnderTest, "kernel backend unavailable here: \(KernelProbe.current.reason)"))
  func kernel() throws {
    let mask = try MaskFD(backend: .kernel)
    defer { try? mask.close() }
    for events in MaskEvents.allCombinations.reversed() {
      #expect(try SyscallCostTests.cost(mask, events) == 1)
      #expect(try SyscallCostTests.cost(mask, events) == 0)
    }
    #expect(try SyscallCostTests.cost(mask, [], data: 5) == 1)
    #expect(try Sys.countingSyscalls { try mask.resignal() } == 1)
  }
}
