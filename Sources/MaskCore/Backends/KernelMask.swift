import CUserProtoShim
import Glibc

/// The kernel backend: one eventfd2(EFD_MASK). Every state change is one
/// 12-byte write; the kernel wakes pollers on every write that leaves at
/// least one event set (a write of no events can satisfy no waiter).
///
/// The module backend uses the same type on an fd opened from
/// `/dev/efd_mask` (``init(moduleDevice:options:)``): the efd_mask module's
/// fds read, write and wake exactly as an EFD_MASK eventfd.
struct KernelMask {
  let descriptor: Int32

  init(options: MaskFD.Options) throws(MaskError) {
    var flags = UP_EFD_MASK
    if options.contains(.closeOnExec) { flags |= up_EFD_CLOEXEC }
    if options.contains(.nonBlocking) { flags |= up_EFD_NONBLOCK }
    descriptor = try Sys.eventfd(flags: flags)
  }

  /// A new mask fd from the efd_mask module's device. It is always opened
  /// `O_CLOEXEC`, so no exec in another thread can inherit it; without
  /// ``MaskFD/Options/closeOnExec`` the flag is cleared afterwards.
  init(moduleDevice path: String, options: MaskFD.Options) throws(MaskError) {
    var flags = O_RDWR | O_CLOEXEC
    if options.contains(.nonBlocking) { flags |= O_NONBLOCK }
    let fd = try Sys.openDevice(path, flags: flags)
    if !options.contains(.closeOnExec) {
      do throws(MaskError) {
        try Sys.setCloseOnExec(fd, false)
      } catch {
        Sys.close(fd)
        throw error
      }
    }
    descriptor = fd
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
