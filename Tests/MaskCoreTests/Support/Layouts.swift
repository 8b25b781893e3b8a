import Glibc
import MaskCore
import TestSupport
import Testing

/// The emulation layouts, which every stock kernel has. The kernel and
/// module backends run the same test bodies in `KernelBackendTests` and
/// `ModuleBackendTests`, suites that are skipped with the probe's reason
/// where the kernel lacks EFD_MASK or /dev/efd_mask is unusable.
let emulationLayouts: [MaskLayout] = EmulationLayout.allCases.map { .emulation($0) }

/// True when the kernel backend must be tested: it is available, or the
/// environment demands it (`MASKCORE_EXPECT_KERNEL=1`, in the QEMU guest).
let kernelUnderTest = KernelProbe.current.isAvailable || getenv("MASKCORE_EXPECT_KERNEL") != nil

/// True when the module backend must be tested: /dev/efd_mask passes the
/// probe, or the environment demands it (`MASKCORE_EXPECT_MODULE=1`, in the
/// QEMU guest with the efd_mask module loaded).
let moduleUnderTest = ModuleProbe.current.isAvailable || getenv("MASKCORE_EXPECT_MODULE") != nil

func backendChoice(_ layout: MaskLayout) -> MaskFD.BackendChoice {
  switch layout {
  case .kernel: .kernel
  case .module: .module
  case .emulation(let emulation): .emulation(emulation)
  }
}

/// True for the backends whose fd holds the 12-byte record (kernel and
/// module): reads consume nothing and every combination is shown.
func hasRecord(_ layout: MaskLayout) -> Bool {
  layout == .kernel || layout == .module
}

/// Creates a mask fd on exactly `layout`.
func makeMask(_ layout: MaskLayout, options: MaskFD.Options = [.closeOnExec]) throws -> MaskFD {
  return try MaskFD(backend: backendChoice(layout), usage: .anyEvents, options: options)
}

/// The helper executable built next to the test bundle.
func helperPath() -> String {
  if let override = getenv("MASKCORE_INSPECT") { return String(cString: override) }
  return HelperProcess.path(of: "maskcore-inspect")
}

/// Runs the helper with `mapping` fds inherited at the given numbers and
/// returns its exit status and its stdout's key=value pairs.
func runHelper(_ arguments: [String], inheriting mapping: [(Int32, Int32)] = [], beforeWait: () throws -> Void = {})
  throws -> (status: Int32, values: [String: String])
{
  try HelperProcess.run(helperPath(), arguments, inheriting: mapping, beforeWait: beforeWait)
}
