import CUserProtoShim
import Glibc

/// Whether this kernel's eventfd2 really has the seed's EFD_MASK semantics.
///
/// Accepting flag `1 << 1` proves nothing: the 2015 EFD_MASK v3 (4-byte
/// writes, no reads) and EFD_VPOLL (8-byte commands) reuse the same bit.
/// The probe therefore checks behaviour: 12-byte writes return 12, the
/// read-back matches, poll reports exactly the written events, and invalid
/// bits are refused without changing the state.
public struct KernelProbe: Sendable, Hashable {
  /// True when the kernel backend can be used.
  public let isAvailable: Bool
  /// Why the kernel backend is or is not used, in one sentence.
  public let reason: String

  /// The result for the running kernel, probed once per process.
  public static var current: KernelProbe { cached }

  private static let cached = run()

  /// Probes the running kernel now (a few syscalls; no caching).
  public static func run() -> KernelProbe {
    let fd = up_eventfd2(0, UP_EFD_MASK | up_EFD_CLOEXEC | up_EFD_NONBLOCK)
    if fd < 0 {
      let why =
        -fd == EINVAL
        ? "eventfd2 refuses EFD_MASK (EINVAL): this kernel does not have the EFD_MASK patch"
        : "eventfd2(EFD_MASK) failed: \(errnoName(-fd))"
      return KernelProbe(isAvailable: false, reason: why)
    }
    defer { _ = close(fd) }
    return evaluate(DescriptorProbeTarget(fd: fd))
  }

  /// The decision for an fd that eventfd2 accepted with flag 2: the kernel
  /// backend only if it behaves exactly like the seed's EFD_MASK.
  static func evaluate(_ target: some ProbeTarget) -> KernelProbe {
    if let failure = check(target) {
      return KernelProbe(
        isAvailable: false,
        reason:
          "eventfd2 accepts flag 2 but behaves differently from the seed's EFD_MASK (\(failure)); another patch may reuse the bit"
      )
    }
    return KernelProbe(
      isAvailable: true,
      reason:
        "eventfd2(EFD_MASK) passed the behavioural probe (12-byte write/read-back, exact poll mask, invalid bits refused)"
    )
  }

  /// Returns a description of the first deviation from the seed, or nil.
  /// ``ModuleProbe`` runs the same checks on the efd_mask module's device.
  static func check(_ fd: some ProbeTarget) -> String? {
    var events: UInt32 = 0
    var data: UInt64 = 0
    let initial = fd.read(&events, &data)
    if initial != 12 {
      return initial < 0
        ? "a 12-byte read failed with \(errnoName(Int32(-initial)))" : "a 12-byte read returned \(initial)"
    }
    if events != 0 { return "a new fd reports events 0x\(String(events, radix: 16)) instead of none" }
    if let revents = fd.poll(), revents != 0 { return "poll on a new fd reports 0x\(String(revents, radix: 16))" }

    let patterns: [(UInt32, UInt64)] = [
      (MaskEvents([.readable, .priority, .error]).rawValue, 0x0123_4567_89ab_cdef),
      (0, 0xfedc_ba98_7654_3210),
      (MaskEvents([.writable, .hangup]).rawValue, 42),
    ]
    for (wanted, payload) in patterns {
      let written = fd.write(wanted, payload)
      if written != 12 {
        return written < 0
          ? "a 12-byte write failed with \(errnoName(Int32(-written)))" : "a 12-byte write returned \(written)"
      }
      let read = fd.read(&events, &data)
      if read != 12 || events != wanted || data != payload {
        return "the read-back does not match what was written"
      }
      guard let revents = fd.poll() else { return "poll failed" }
      if revents != wanted {
        return "poll reports 0x\(String(revents, radix: 16)) after writing 0x\(String(wanted, radix: 16))"
      }
    }
    // Invalid bits must be refused and change nothing.
    let refused = fd.write(0x20, 7)
    if refused != -Int(EINVAL) { return "a write with an invalid bit was not refused with EINVAL" }
    _ = fd.read(&events, &data)
    if events != patterns[2].0 || data != patterns[2].1 { return "a refused write changed the state" }
    return nil
  }

}

/// What the probe does to an fd that eventfd2 accepted with flag 2. Tests
/// substitute the other patches that reuse the bit.
protocol ProbeTarget {
  /// write(2) of one 12-byte efd_mask; bytes written or -errno.
  func write(_ events: UInt32, _ data: UInt64) -> Int
  /// read(2) of 12 bytes; bytes read or -errno.
  func read(_ events: inout UInt32, _ data: inout UInt64) -> Int
  /// The five poll bits poll(2) reports now, or nil when poll fails.
  func poll() -> UInt32?
}

struct DescriptorProbeTarget: ProbeTarget {
  let fd: Int32

  func write(_ events: UInt32, _ data: UInt64) -> Int { up_efd_mask_write(fd, events, data) }

  func read(_ events: inout UInt32, _ data: inout UInt64) -> Int { up_efd_mask_read(fd, &events, &data) }

  func poll() -> UInt32? {
    var entry = pollfd(fd: fd, events: Int16(MaskEvents.all.rawValue), revents: 0)
    guard Glibc.poll(&entry, 1, 0) >= 0 else { return nil }
    return UInt32(UInt16(bitPattern: entry.revents)) & MaskEvents.all.rawValue
  }
}
