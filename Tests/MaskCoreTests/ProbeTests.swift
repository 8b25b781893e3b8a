import CUserProtoShim
import Glibc
import MaskCore
import TestSupport
import Testing

/// Kernel backend detection against the running kernel.
@Suite("Kernel probe", .testThreads)
struct ProbeTests {
  @Test("detection matches what eventfd2(EFD_MASK) does on this kernel")
  func detection() throws {
    let probe = KernelProbe.current
    #expect(!probe.reason.isEmpty)
    let fd = up_eventfd2(0, UP_EFD_MASK | up_EFD_CLOEXEC)
    if fd < 0 {
      #expect(!probe.isAvailable, "no EFD_MASK: the probe must fall back")
      if -fd == EINVAL { #expect(probe.reason.contains("EINVAL")) }
    } else {
      close(fd)
      // Accepting the flag is not enough; the probe decides on behaviour.
      #expect(probe.isAvailable == KernelProbe.run().isAvailable)
    }
    if getenv("MASKCORE_EXPECT_KERNEL") != nil {
      #expect(probe.isAvailable, "MASKCORE_EXPECT_KERNEL is set: this kernel must have EFD_MASK (\(probe.reason))")
    }
  }

  @Test("automatic selection falls back with the probe's reason")
  func automaticSelection() throws {
    let (layout, reason) = try MaskFD.choose(.automatic, usage: .socket)
    if KernelProbe.current.isAvailable {
      #expect(layout == .kernel)
    } else if getenv("MASKCORE_BACKEND") == nil {
      if ModuleProbe.current.isAvailable {
        #expect(layout == .module)
        #expect(reason.contains(ModuleProbe.current.reason))
      } else {
        #expect(layout == .emulation(.pair))
        #expect(reason.contains(ModuleProbe.current.reason))
      }
      #expect(reason.contains(KernelProbe.current.reason))
    }
  }

  @Test("the module probe matches what /dev/efd_mask does here")
  func moduleDetection() {
    let probe = ModuleProbe.current
    #expect(!probe.reason.isEmpty)
    if access(ModuleProbe.devicePath, F_OK) != 0 {
      #expect(!probe.isAvailable)
      #expect(probe.reason.hasPrefix("device missing"), "\(probe.reason)")
    }
    if getenv("MASKCORE_EXPECT_MODULE") != nil {
      #expect(probe.isAvailable, "MASKCORE_EXPECT_MODULE is set: /dev/efd_mask must pass the probe (\(probe.reason))")
    }
  }

  @Test("usage picks the cheapest exact emulation layout")
  func usageLayouts() {
    #expect(MaskFD.Usage.socket.emulationLayout == .pair)
    #expect(MaskFD.Usage.anyEvents.emulationLayout == .full)
    #expect(MaskFD.Usage.events([.readable, .writable]).emulationLayout == .pair)
    #expect(MaskFD.Usage.events([.readable]).emulationLayout == .pair)
    #expect(MaskFD.Usage.events([.readable, .writable, .error]).emulationLayout == .full)
    #expect(MaskFD.Usage.events([.readable, .hangup]).emulationLayout == .full)
  }

  @Test("fidelity table: counts per mechanism")
  func fidelityCounts() {
    func count(_ layout: MaskLayout, _ fidelity: MaskFidelity) -> Int {
      MaskEvents.allCombinations.filter { layout.fidelity($0) == fidelity }.count
    }
    #expect(count(.kernel, .exact) == 32)
    #expect(count(.module, .exact) == 32)
    #expect(MaskLayout.module.descriptorCount == 1)
    #expect(count(.emulation(.full), .exact) == 12)
    #expect(count(.emulation(.full), .terminal) == 6)
    #expect(count(.emulation(.pair), .exact) == 8)
    #expect(count(.emulation(.pair), .terminal) == 3)
    let table = FidelityTable.markdown()
    #expect(table.split(separator: "\n").count == 2 + 32 + 1)
  }

  static let docsPath = URLPath.repositoryRoot() + "/docs/maskcore.md"

  @Test(
    "docs/maskcore.md shows the fidelity table the API reports",
    .enabled(if: access(docsPath, R_OK) == 0, "the sources are not on this machine (the QEMU guest)"))
  func fidelityTableInDocs() throws {
    let text = try #require(readWholeFile(ProbeTests.docsPath), "cannot read \(ProbeTests.docsPath)")
    let table = FidelityTable.markdown().trimmingTrailingNewlines()
    #expect(text.contains(table), "docs/maskcore.md must contain FidelityTable.markdown() verbatim")
  }
}

/// The repository root, from this file's path.
enum URLPath {
  static func repositoryRoot(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/MaskCoreTests/ProbeTests.swift
    return parts.joined(separator: "/")
  }
}

func readWholeFile(_ path: String) -> String? {
  guard let file = fopen(path, "r") else { return nil }
  defer { fclose(file) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = fread(&chunk, 1, chunk.count, file)
    if n <= 0 { break }
    bytes += chunk[0..<n]
  }
  return String(decoding: bytes, as: UTF8.self)
}

extension String {
  func trimmingTrailingNewlines() -> String {
    var s = self
    while s.hasSuffix("\n") { s.removeLast() }
    return s
  }
}
