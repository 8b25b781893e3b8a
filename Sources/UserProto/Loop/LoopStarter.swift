import CUserProtoShim
import Dispatch
import Glibc

/// Starts a loop's thread and its engine there, before the loop exists:
/// the engine is started on the thread that will submit to it (an io_uring
/// ring with a single issuer is enabled by its submitter), and the caller
/// learns whether that worked before it commits to the engine.
final class LoopStarter: @unchecked Sendable {
  private let engine: any LoopEngine
  private let name: String
  private let faults: LoopFaults?
  private let started = DispatchSemaphore(value: 0)
  private let go = DispatchSemaphore(value: 0)
  // Written by the thread before `started` is signalled.
  private var startError: IOError?
  // Written by the caller before `go` is signalled.
  private var loop: EventLoop?
  private(set) var threadID: UInt = 0

  private init(engine: any LoopEngine, name: String, faults: LoopFaults?) {
    self.engine = engine
    self.name = name
    self.faults = faults
  }

  /// Starts the thread and the engine on it. On failure the thread has
  /// ended and the engine is closed. `faults` (tests) is bound on the
  /// thread for its whole life: the engine's calls there see it.
  static func spawn(engine: any LoopEngine, name: String, faults: LoopFaults?) throws(IOError) -> LoopStarter {
    let starter = LoopStarter(engine: engine, name: name, faults: faults)
    let box = Unmanaged.passRetained(starter).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    defer { pthread_attr_destroy(&attributes) }
    var thread = pthread_t()
    let rc = pthread_create(
      &thread, &attributes,
      { raw in
        Unmanaged<LoopStarter>.fromOpaque(raw!).takeRetainedValue().main()
        return nil
      }, box)
    if rc != 0 {
      Unmanaged<LoopStarter>.fromOpaque(box).release()
      engine.close()
      throw IOError("pthread_create", rc)
    }
    starter.threadID = UInt(thread)
    starter.started.wait()
    if let error = starter.startError {
      engine.close()
      throw error
    }
    return starter
  }

  /// Hands the started thread its loop, which it then runs.
  func proceed(with loop: EventLoop) {
    self.loop = loop
    go.signal()
  }

  private func main() {
    up_set_thread_name(name)
    LoopFaults.binding(faults) { run() }
  }

  private func run() {
    do {
      try engine.start()
    } catch {
      startError = error
      started.signal()
      return
    }
    started.signal()
    go.wait()
    let loop = self.loop
    self.loop = nil
    loop?.run()
  }
}
