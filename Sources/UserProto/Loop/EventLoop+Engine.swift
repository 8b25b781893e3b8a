import Glibc

// Choosing the engine (the configuration, `USERPROTO_LOOP_BACKEND`, the
// fallback from io_uring to epoll) and starting it on the loop's thread.
extension EventLoop {
  /// The started engine, why it was chosen, the choice after the
  /// environment, and the thread it runs on.
  static func startEngine(_ configuration: Configuration) throws(IOError) -> (
    any LoopEngine, String, BackendChoice, LoopStarter
  ) {
    var (engine, reason, choice, note) = try makeEngine(configuration)
    var starter: LoopStarter
    do throws(IOError) {
      starter = try LoopStarter.spawn(engine: engine, name: configuration.name, faults: configuration.faults)
    } catch {
      guard choice == .automatic, engine.kind == .ioUring else { throw error }
      engine = try EpollEngine()
      reason = "\(note)io_uring ring refused after set-up (\(error)); using epoll"
      starter = try LoopStarter.spawn(engine: engine, name: configuration.name, faults: configuration.faults)
    }
    return (engine, reason, choice, starter)
  }

  /// The engine, why it was chosen, the choice after the environment, and
  /// the note about an unknown environment value (empty if none).
  private static func makeEngine(_ configuration: Configuration) throws(IOError) -> (
    any LoopEngine, String, BackendChoice, String
  ) {
    var choice = configuration.backend
    var note = ""
    if choice == .automatic, configuration.honorsEnvironment, let forced = getenv("USERPROTO_LOOP_BACKEND") {
      (choice, note) = resolve(environment: String(cString: forced))
      if !note.isEmpty {
        Sys.writeStandardError("userproto: \(note)choosing the engine automatically\n")
      }
    }
    switch choice {
    case .epoll:
      return (try EpollEngine(), "epoll was requested", choice, note)
    case .ioUring:
      return (try URingEngine(configuration), "io_uring was requested", choice, note)
    case .automatic:
      do {
        return (try URingEngine(configuration), note + "io_uring is available", choice, note)
      } catch {
        let why =
          switch error.code {
          case EPERM: "io_uring refused with EPERM (kernel.io_uring_disabled or a seccomp filter)"
          case ENOSYS: "io_uring unavailable (ENOSYS: kernel without io_uring, or a seccomp filter)"
          case ENOMEM: "io_uring ring set-up failed with ENOMEM (locked-memory or memory limit)"
          case EOPNOTSUPP: "io_uring lacks an operation the loop needs (\(error.operation))"
          default: "io_uring set-up failed: \(error)"
          }
        return (try EpollEngine(), "\(note)\(why); using epoll", choice, note)
      }
    }
  }

  /// The engine `USERPROTO_LOOP_BACKEND` asks for, and a note (logged and
  /// put in ``backendReason``) when its value is not one the loop knows.
  static func resolve(environment value: String) -> (BackendChoice, note: String) {
    switch value {
    case "io_uring", "iouring", "uring": (.ioUring, "")
    case "epoll": (.epoll, "")
    case "", "automatic", "auto": (.automatic, "")
    default: (.automatic, "USERPROTO_LOOP_BACKEND=\"\(value)\" is not io_uring, epoll or automatic: ignored; ")
    }
  }
}
