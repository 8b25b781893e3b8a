import CUserProtoShim
import Glibc

/// Whether the efd_mask kernel module's device gives mask fds with the
/// seed's EFD_MASK semantics.
///
/// The module (kernel/module/ in the repository) registers `/dev/efd_mask`;
/// every open of it is a new mask fd that behaves as an EFD_MASK eventfd of
/// the patched kernel. The probe opens the device (`O_RDWR | O_CLOEXEC |
/// O_NONBLOCK`) and runs the checks of ``KernelProbe`` on the fd, so a
/// device that merely exists is not enough.
public struct ModuleProbe: Sendable, Hashable {
  /// The device the efd_mask module registers.
  public static let devicePath = "/dev/efd_mask"

  /// True when the module backend can be used.
  public let isAvailable: Bool
  /// Why the module backend is or is not used, in one sentence.
  public let reason: String

  /// The result for ``devicePath``, probed once per process.
  public static var current: ModuleProbe { cached }

  private static let cached = run()

  /// Probes the device at `path` now (a few syscalls; no caching).
  public static func run(path: String = devicePath) -> ModuleProbe {
    let fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK)
    if fd < 0 {
      return ModuleProbe(isAvailable: false, reason: openFailure(path: path, errno: errno))
    }
    defer { _ = close(fd) }
    return evaluate(DescriptorProbeTarget(fd: fd), path: path)
  }

  /// Why opening the device failed, by errno.
  static func openFailure(path: String, errno code: Int32) -> String {
    switch code {
    case ENOENT, ENXIO, ENODEV:
      return "device missing: \(path) does not exist (\(errnoName(code))): the efd_mask module is not loaded"
    case EACCES, EPERM:
      return "permission denied: \(path) cannot be opened read-write by this user (\(errnoName(code)))"
    default:
      return "opening \(path) failed: \(errnoName(code))"
    }
  }

  /// The decision for an fd opened from the device.
  static func evaluate(_ target: some ProbeTarget, path: String = devicePath) -> ModuleProbe {
    if let failure = KernelProbe.check(target) {
      return ModuleProbe(
        isAvailable: false,
        reason: "probe failed: \(path) does not behave like the seed's EFD_MASK (\(failure))")
    }
    return ModuleProbe(
      isAvailable: true,
      reason:
        "\(path) (the efd_mask module) passed the behavioural probe (12-byte write/read-back, exact poll mask, invalid bits refused)"
    )
  }
}
