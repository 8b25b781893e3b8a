import CUserProtoShim
import Glibc

extension MaskFD {
  /// Reads the state of a mask fd that this process did not create: one
  /// inherited across fork/exec or received with SCM_RIGHTS.
  ///
  /// On the kernel and module backends this reads the 12-byte `efd_mask`
  /// (never blocks, consumes nothing). On the emulation it polls the socket and reads the
  /// data from its socket options. Nothing is changed either way.
  /// - Throws: ``MaskError/system(operation:errno:)`` with EINVAL when the
  ///   descriptor is not a mask fd (a counter eventfd is refused rather than
  ///   drained; a socket must be an AF_UNIX datagram socket). Any AF_UNIX
  ///   datagram socket passes that check: its poll bits and timeouts are
  ///   then reported as a mask state.
  public static func inspect(descriptor fd: Int32) throws(MaskError) -> MaskState {
    let target = linkTarget(fd)
    // An EFD_MASK eventfd, or an fd of the efd_mask module's device (whose
    // fdinfo has the same eventfd-mask line).
    let moduleFD = target == ModuleProbe.devicePath && fdinfo(fd).contains("eventfd-mask:")
    if target == "anon_inode:[eventfd]" || moduleFD {
      if fdinfo(fd).contains("eventfd-count") {
        throw .system(operation: "inspect: a counter eventfd is not a mask fd", errno: EINVAL)
      }
      var events: UInt32 = 0
      var data: UInt64 = 0
      let r = up_efd_mask_read(fd, &events, &data)
      if r < 0 { throw .system(operation: "read(efd_mask)", errno: Int32(-r)) }
      if r != 12 { throw .system(operation: "read(efd_mask) returned \(r) bytes", errno: EINVAL) }
      return MaskState(events: try MaskEvents(validating: events), data: data)
    }
    if target.hasPrefix("socket:") {
      // Only an AF_UNIX datagram socket can be an emulated mask fd; any other
      // socket's poll bits and timeouts would read as a wrong mask state.
      let domain = try Sys.socketOption(fd, SO_DOMAIN)
      let type = try Sys.socketOption(fd, SO_TYPE)
      if domain != AF_UNIX || type != Int32(SOCK_DGRAM.rawValue) {
        throw .system(
          operation: "inspect: \(target) is not an AF_UNIX datagram socket, so not a mask fd", errno: EINVAL)
      }
      let events = MaskEvents(rawValue: try Sys.poll(fd) & MaskEvents.all.rawValue)
      let low = try Sys.timeoutSeconds(fd, SO_SNDTIMEO)
      let high = try Sys.timeoutSeconds(fd, SO_RCVTIMEO)
      return MaskState(events: events, data: UInt64(high) << 32 | UInt64(low))
    }
    if target.isEmpty { throw .system(operation: "inspect", errno: EBADF) }
    throw .system(operation: "inspect: \(target) is not a mask fd", errno: EINVAL)
  }

  private static func linkTarget(_ fd: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    guard n > 0 else { return "" }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private static func fdinfo(_ fd: Int32) -> String {
    guard let file = fopen("/proc/self/fdinfo/\(fd)", "r") else { return "" }
    defer { fclose(file) }
    var text = ""
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
      let bytes = line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
      text += String(decoding: bytes, as: UTF8.self)
    }
    return text
  }
}
