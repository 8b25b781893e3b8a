import Glibc
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

/// `USERPROTO_REQUIRE_IO_URING=1` (set by scripts/test.sh, so by CI): a host
/// refusing io_uring fails the io_uring cases instead of skipping them, so
/// the suite cannot pass without ever running the io_uring engine.
let ioUringRequired = getenv("USERPROTO_REQUIRE_IO_URING").map { String(cString: $0) == "1" } ?? false

/// Whether the io_uring cases run: io_uring works here, or it is required
/// (and then each case fails on the refusal).
let ioUringAvailable = ioUringRefusal == nil || ioUringRequired

/// Skips the calling io_uring case with the reason when this host refuses
/// io_uring, or fails it when ``ioUringRequired``.
func requireIoUring() throws {
  guard let ioUringRefusal else { return }
  if ioUringRequired {
    Issue.record("USERPROTO_REQUIRE_IO_URING=1, but \(ioUringRefusal)")
    throw IoUringRequired()
  }
  try Test.cancel(Comment(rawValue: ioUringRefusal))
}

struct IoUringRequired: Error {}

/// A loop with the engine under test; an io_uring case is skipped (with the
/// reason) on a host that refuses io_uring, unless ``ioUringRequired``.
func makeTestLoop(_ backend: EventLoop.BackendChoice, entries: UInt32 = 256, faults: LoopFaults? = nil) throws
  -> EventLoop
{
  if backend == .ioUring { try requireIoUring() }
  var configuration = EventLoop.Configuration(backend: backend, ringEntries: entries)
  configuration.faults = faults
  return try EventLoop(configuration: configuration)
}
