import CUserProtoShim
import Glibc

/// The kernel backend: one eventfd2(EFD_MASK). Every state change is one
/// 12-byte write; the kernel wakes pollers on every write that leaves at
/// least one event set (a write of no events can satisfy no waiter).
struct KernelMask {
  let descriptor: Int32

  init(options: MaskFD.Options) throws(MaskError) {
    var flags = UP_EFD_MASK
    if options.contains(.closeOnExec) { flags |= up_EFD_CLOEXEC }
    if options.contains(.nonBlocking) { flags |= up_EFD_NONBLOCK }
    descriptor = try Sys.eventfd(flags: flags)
  }

  func apply(_ target: MaskState) throws(MaskError) {
    try Sys.writeMask(descriptor, target)
  }

  func readBack() throws(MaskError) -> MaskState {
    var events: UInt32 = 0
    var data: UInt64 = 0
    let r = up_efd_mask_read(descriptor, &events, &data)
    if r < 0 { throw .system(operation: "read(efd_mask)", errno: Int32(-r)) }
    return MaskState(events: MaskEvents(rawValue: events), data: data)
  }

  /// Puts `target` back when a consumer wrote the fd itself; returns true
  /// when it had to.
  func repair(to target: MaskState) throws(MaskError) -> Bool {
    let shown = try readBack()
    if shown == target { return false }
    try apply(target)
    return true
  }

  func close() { Sys.close(descriptor) }
}
