import Glibc
import TestSupport
import Testing

@testable import MaskCore

/// How the module backend is chosen, and what the selection reason says
/// when it is not: device missing, permission denied, probe failed.
@Suite("Module backend selection", .testThreads)
struct ModuleSelectionTests {
  static let kernelMissing = KernelProbe(isAvailable: false, reason: "no EFD_MASK here")
  static let kernelPresent = KernelProbe(isAvailable: true, reason: "EFD_MASK here")
  static let modulePresent = ModuleProbe(isAvailable: true, reason: "/dev/efd_mask passed")
  static let moduleMissing = ModuleProbe(isAvailable: false, reason: "device missing: no /dev/efd_mask")

  @Test("a missing device is reported as missing")
  func missingDevice() {
    let probe = ModuleProbe.run(path: "/nonexistent/efd_mask")
    #expect(!probe.isAvailable)
    #expect(probe.reason.hasPrefix("device missing: /nonexistent/efd_mask"), "\(probe.reason)")
    #expect(probe.reason.contains("ENOENT"))
  }

  @Test("an unopenable device is reported as permission denied", arguments: [EACCES, EPERM])
  func permissionDenied(code: Int32) {
    let reason = ModuleProbe.openFailure(path: "/dev/efd_mask", errno: code)
    #expect(reason.hasPrefix("permission denied: /dev/efd_mask"), "\(reason)")
    #expect(reason.contains(errnoName(code)))
  }

  @Test("a device that is not an efd_mask device fails the probe (/dev/null reads 0 bytes)")
  func probeFailsOnOtherDevice() {
    let probe = ModuleProbe.run(path: "/dev/null")
    #expect(!probe.isAvailable)
    #expect(probe.reason.hasPrefix("probe failed: /dev/null"), "\(probe.reason)")
    #expect(probe.reason.contains("a 12-byte read returned 0"), "\(probe.reason)")
  }

  @Test("an impostor fd fails the probe with the deviation named; a seed-like fd passes")
  func probeEvaluates() {
    let impostor = ProbeImpostorTests.FakeTarget()
    impostor.acceptInvalidBits = true
    let refused = ModuleProbe.evaluate(impostor)
    #expect(!refused.isAvailable)
    #expect(refused.reason.hasPrefix("probe failed: /dev/efd_mask"), "\(refused.reason)")
    #expect(refused.reason.contains("invalid bit"), "\(refused.reason)")
    let passed = ModuleProbe.evaluate(ProbeImpostorTests.FakeTarget())
    #expect(passed.isAvailable, "\(passed.reason)")
  }

  @Test("automatic: the kernel first, then the module, then the emulation, each with its reason")
  func automaticOrder() throws {
    var probed = 0
    let (kernel, _) = try MaskFD.choose(
      .automatic, usage: .socket, override: nil, kernel: Self.kernelPresent,
      module: {
        probed += 1
        return Self.modulePresent
      })
    #expect(kernel == .kernel)
    #expect(probed == 0, "the module is not probed when the kernel backend is taken")

    let (module, why) = try MaskFD.choose(
      .automatic, usage: .socket, override: nil, kernel: Self.kernelMissing, module: { Self.modulePresent })
    #expect(module == .module)
    #expect(
      why.contains("no EFD_MASK here") && why.contains("using the module backend: /dev/efd_mask passed"), "\(why)")

    let (fallback, fallbackWhy) = try MaskFD.choose(
      .automatic, usage: .socket, override: nil, kernel: Self.kernelMissing, module: { Self.moduleMissing })
    #expect(fallback == .emulation(.pair))
    #expect(
      fallbackWhy.contains("no EFD_MASK here") && fallbackWhy.contains("no module backend: device missing"),
      "\(fallbackWhy)")
  }

  @Test("MASKCORE_BACKEND=module forces the module backend, or says why it cannot")
  func forced() throws {
    let (layout, why) = try MaskFD.choose(
      .automatic, usage: .anyEvents, override: "module", kernel: Self.kernelPresent, module: { Self.modulePresent })
    #expect(layout == .module, "forced over an available kernel backend")
    #expect(why.contains("requested"), "\(why)")
    #expect(throws: MaskError.backendUnavailable(.module, reason: Self.moduleMissing.reason)) {
      try MaskFD.choose(
        .automatic, usage: .socket, override: "module", kernel: Self.kernelMissing, module: { Self.moduleMissing })
    }
    #expect(throws: MaskError.backendUnavailable(.module, reason: Self.moduleMissing.reason)) {
      try MaskFD.choose(
        .module, usage: .socket, override: nil, kernel: Self.kernelMissing, module: { Self.moduleMissing })
    }
  }

  @Test(
    "the module backend, requested explicitly where it is unusable, says why",
    .enabled(if: !ModuleProbe.current.isAvailable, "/dev/efd_mask works here, so the request succeeds"))
  func moduleRequestedWhereMissing() throws {
    do {
      _ = try MaskFD(backend: .module)
      Issue.record("creating a module mask fd must fail here")
    } catch {
      #expect(error == .backendUnavailable(.module, reason: ModuleProbe.current.reason))
    }
  }
}
