import Glibc
import MaskCore
import TestSupport
import Testing

/// The whole suite on the module backend (the efd_mask module's
/// /dev/efd_mask). Skipped, with the probe's reason, where the device is
/// missing or fails the probe; kernel/ runs it in a QEMU guest with the
/// module loaded (with MASKCORE_EXPECT_MODULE=1, so it cannot be skipped
/// there).
@Suite(
  "Module backend",
  .enabled(if: moduleUnderTest, "module backend unavailable here: \(ModuleProbe.current.reason)"), .testThreads
)
struct ModuleBackendTests {
  @Test func moduleIsInUse() throws {
    let mask = try makeMask(.module)
    defer { try? mask.close() }
    #expect(mask.backend == .module)
    #expect(mask.descriptorCount == 1)
    var buffer = [CChar](repeating: 0, count: 256)
    let n = readlink("/proc/self/fd/\(mask.fileDescriptor)", &buffer, buffer.count - 1)
    let target = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    #expect(target == ModuleProbe.devicePath, "the fd is the module's device, not an eventfd: \(target)")
    print("MaskCore module backend in use: \(mask.selectionReason)")
  }
  @Test func everyTransition() throws { try TransitionTests().everyTransition(layout: .module) }
  @Test func unsupported() throws { try TransitionTests().unsupportedCombinations(layout: .module) }
  @Test func randomWalk() throws { try TransitionTests().randomWalk(layout: .module) }
  @Test func idempotent() throws { try TransitionTests().idempotentSet(layout: .module) }
  @Test func resignal() throws { try TransitionTests().resignal(layout: .module) }
  @Test func update() throws { try TransitionTests().update(layout: .module) }
  @Test func epollWake() throws { try WakeTests.epollWaitWakes(.module) }
  @Test func pollWake() throws { try WakeTests.pollWakes(.module) }
  @Test func concurrent() throws { try WakeTests.concurrentSetters(.module) }
  @Test func child() throws { try CrossProcessTests.childSeesState(.module) }
  @Test func scmRights() throws { try CrossProcessTests.scmRightsReceiverSeesState(.module) }
  @Test func crossProcessWake() throws { try CrossProcessTests.childWokenAcrossProcesses(.module) }
  @Test func invalidBits() throws { try BadInputTests.invalidBits(.module) }
  @Test func useAfterClose() throws { try BadInputTests.useAfterClose(.module) }
  @Test func emfile() throws { try BadInputTests.emfile(.module) }
  @Test func options() throws { try BadInputTests.descriptorOptions(.module) }
  @Test func leaks() throws { try LeakTests.cycles(.module) }
  @Test func resync() throws { try ContractTests.resyncAfterConsumerRead(.module) }
  @Test func forkedChild() throws { try ContractTests.forkedChild(.module) }
  @Test func descriptorCost() throws { try ContractTests.descriptorCost(.module) }
}
