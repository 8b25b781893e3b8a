import Testing

@_spi(Testing) @testable import UserProto

/// Why io_uring cannot be used on this host, or nil when it can.
let ioUringRefusal: String? = {
  do {
    var configuration = EventLoop.Configuration(backend: .ioUring)
    configuration.honorsEnvironment = false
    let loop = try EventLoop(configuration: configuration)
    loop.shutdownAndWait()
    return nil
  } catch {
    return "io_uring is refused on this host: \(error)"
  }
}()

let ioUringAvailable = ioUringRefusal == nil

/// A loop with the engine under test; an io_uring case is skipped (with the
/// reason) on a host that refuses io_uring.
func makeTestLoop(_ backend: EventLoop.BackendChoice, entries: UInt32 = 256, faults: LoopFaults? = nil) throws
  -> EventLoop
{
  if backend == .ioUring, let ioUringRefusal { try Test.cancel(Comment(rawValue: ioUringRefusal)) }
  var configuration = EventLoop.Configuration(backend: backend, ringEntries: entries)
  configuration.faults = faults
  return try EventLoop(configuration: configuration)
}
