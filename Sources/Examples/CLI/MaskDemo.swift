import ArgumentParser
import Dispatch
import Glibc
import UserProto

/// Shows a mask fd at work: the backend and why, the fidelity table, and a
/// plain poll(2) loop watching the fd while another thread changes it.
struct MaskDemo: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mask-demo",
    abstract: "Show the mask fd: backend, fidelity, and a live poll of transitions.")

  @Option(help: "Backend: automatic, kernel, module, pair or full.")
  var backend: String = "automatic"

  func run() throws {
    let choice: MaskFD.BackendChoice
    switch backend {
    case "automatic": choice = .automatic
    case "kernel": choice = .kernel
    case "module": choice = .module
    case "pair": choice = .emulation(.pair)
    case "full": choice = .emulation(.full)
    default: throw ValidationError("unknown backend \(backend)")
    }
    let probe = KernelProbe.current
    print("kernel EFD_MASK probe: \(probe.isAvailable ? "available" : "not available")")
    print("  \(probe.reason)")
    let module = ModuleProbe.current
    print("efd_mask module probe: \(module.isAvailable ? "available" : "not available")")
    print("  \(module.reason)")
    let mask = try MaskFD(backend: choice, usage: .anyEvents)
    print("mask fd \(mask.fileDescriptor): backend \(mask.layout), \(mask.descriptorCount) fd(s)")
    print("  why: \(mask.selectionReason)\n")
    print("Fidelity of every combination (exact / terminal / unsupported):\n")
    print(FidelityTable.markdown())
    print("\nA plain poll(2) loop watches fd \(mask.fileDescriptor) while another thread sets it:\n")

    let steps: [(MaskEvents, UInt64)] = [
      ([.readable], 1), ([.readable, .writable], 2), ([], 3), ([.writable], 4),
      ([.error, .writable], 5), ([.error, .priority, .readable, .writable], 6),
      ([.readable, .writable], 7), ([.readable, .writable, .hangup], 8),
    ].filter { mask.layout.fidelity($0.0) != .unsupported }

    let go = DispatchSemaphore(value: 0)
    let seen = DispatchSemaphore(value: 0)
    let writer = Thread {
      for (events, data) in steps {
        go.wait()
        do { try mask.set(events, data: data) } catch { print("set failed: \(error)") }
        seen.wait()
      }
    }
    writer.start()
    var failures = 0
    for (events, data) in steps {
      go.signal()
      // Wait until the fd reports the new state (or time out after 1 s).
      var observed = MaskEvents()
      let deadline = DispatchTime.now().uptimeNanoseconds + 1_000_000_000
      repeat {
        var entry = pollfd(fd: mask.fileDescriptor, events: Int16(MaskEvents.all.rawValue), revents: 0)
        _ = poll(&entry, 1, 50)
        observed = MaskEvents(rawValue: UInt32(UInt16(bitPattern: entry.revents)) & MaskEvents.all.rawValue)
      } while observed != events && DispatchTime.now().uptimeNanoseconds < deadline
      let state = try MaskFD.inspect(descriptor: mask.fileDescriptor)
      let ok = observed == events && state.data == data
      if !ok { failures += 1 }
      let name = String(describing: events)
      let label = name + String(repeating: " ", count: max(0, 34 - name.count))
      print("  set \(label) poll sees \(observed), data \(state.data)  \(ok ? "ok" : "MISMATCH")")
      seen.signal()
    }
    writer.join()
    try mask.close()
    print("\n\(steps.count) transitions, \(failures) mismatches.")
    if failures > 0 { throw ExitCode.failure }
  }
}

/// A joinable thread, so the demo needs no Foundation.
final class Thread: @unchecked Sendable {
  private var handle = pthread_t()
  private let body: () -> Void
  init(_ body: @escaping @Sendable () -> Void) { self.body = body }
  func start() {
    let box = Unmanaged.passRetained(self).toOpaque()
    pthread_create(
      &handle, nil,
      { raw in
        let thread = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
        thread.body()
        return nil
      }, box)
  }
  func join() { pthread_join(handle, nil) }
}

extension MaskDemo {
  /// A backend's name for people.
  static func describe(_ backend: MaskBackendKind) -> String {
    switch backend {
    case .kernel: "kernel EFD_MASK"
    case .module: "efd_mask module"
    case .emulation: "stock-kernel emulation"
    }
  }
}
