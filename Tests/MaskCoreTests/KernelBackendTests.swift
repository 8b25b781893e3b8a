import MaskCore
import TestSupport
import Testing

/// The whole suite on the kernel backend. Skipped, with the probe's reason,
/// on kernels without EFD_MASK; kernel/ runs it in a QEMU guest whose kernel
/// has it (with MASKCORE_EXPECT_KERNEL=1, so it cannot be skipped there).
@Suite(
  "Kernel backend",
  .enabled(if: kernelUnderTest, "kernel backend unavailable here: \(KernelProbe.current.reason)"), .testThreads
)
struct KernelBackendTests {
  @Test func kernelIsInUse() throws {
    let mask = try makeMask(.kernel)
    defer { try? mask.close() }
    #expect(mask.backend == .kernel)
    #expect(mask.descriptorCount == 1)
    print("MaskCore kernel backend in use: \(mask.selectionReason)")
  }
  @Test func everyTransition() throws { try TransitionTests().everyTransition(layout: .kernel) }
  @Test func unsupported() throws { try TransitionTests().unsupportedCombinations(layout: .kernel) }
  @Test func randomWalk() throws { try TransitionTests().randomWalk(layout: .kernel) }
  @Test func idempotent() throws { try TransitionTests().idempotentSet(layout: .kernel) }
  @Test func resignal() throws { try TransitionTests().resignal(layout: .kernel) }
  @Test func update() throws { try TransitionTests().update(layout: .kernel) }
  @Test func epollWake() throws { try WakeTests.epollWaitWakes(.kernel) }
  @Test func pollWake() throws { try WakeTests.pollWakes(.kernel) }
  @Test func concurrent() throws { try WakeTests.concurrentSetters(.kernel) }
  @Test func child() throws { try CrossProcessTests.childSeesState(.kernel) }
  @Test func scmRights() throws { try CrossProcessTests.scmRightsReceiverSeesState(.kernel) }
  @Test func crossProcessWake() throws { try CrossProcessTests.childWokenAcrossProcesses(.kernel) }
  @Test func invalidBits() throws { try BadInputTests.invalidBits(.kernel) }
  @Test func useAfterClose() throws { try BadInputTests.useAfterClose(.kernel) }
  @Test func emfile() throws { try BadInputTests.emfile(.kernel) }
  @Test func options() throws { try BadInputTests.descriptorOptions(.kernel) }
  @Test func leaks() throws { try LeakTests.cycles(.kernel) }
  @Test func resync() throws { try ContractTests.resyncAfterConsumerRead(.kernel) }
  @Test func forkedChild() throws { try ContractTests.forkedChild(.kernel) }
  @Test func descriptorCost() throws { try ContractTests.descriptorCost(.kernel) }
}
