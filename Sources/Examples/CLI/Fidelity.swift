import ArgumentParser
import UserProto

/// Prints the fidelity table and the kernel and module probes' verdicts.
struct Fidelity: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print which event combinations each mask fd backend shows exactly.")

  func run() {
    let probe = KernelProbe.current
    print("kernel backend: \(probe.isAvailable ? "available" : "unavailable") (\(probe.reason))")
    let module = ModuleProbe.current
    print("module backend: \(module.isAvailable ? "available" : "unavailable") (\(module.reason))\n")
    print(FidelityTable.markdown())
  }
}
