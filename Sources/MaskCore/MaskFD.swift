import CUserProtoShim
import Glibc
import Locking

/// A real file descriptor whose readiness the program sets.
///
/// Poll it with poll(2), select(2), epoll or io_uring next to any other fd:
/// it reports exactly the events last set with ``set(_:data:)``, any mix of
/// POLLIN, POLLPRI, POLLOUT, POLLERR and POLLHUP that the backend supports,
/// plus 64 bits of opaque data.
///
/// The mask fd owns its descriptor. Consumers may poll it and read its state
/// with ``inspect(descriptor:)``, but must not read, write, shut down or
/// close it: ``close()`` closes it, and after that the library never touches
/// that number again. A consumer that read or wrote the fd anyway (an event
/// loop that reads every readable fd) can put the state back with
/// ``resync()``. In a fork()ed child, calls that change the state throw
/// ``MaskError/forkedChild``. Every method is safe from any thread.
public final class MaskFD: Sendable {
  /// Options for the descriptor users poll.
  public struct Options: OptionSet, Hashable, Sendable {
    /// The option bits.
    public let rawValue: Int
    /// Creates a set of options from their bits.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// O_NONBLOCK on the descriptor.
    public static let nonBlocking = Options(rawValue: 1)
    /// FD_CLOEXEC on the descriptor (the default).
    public static let closeOnExec = Options(rawValue: 2)
  }

  /// Which backend to use: a request, automatic or one backend (as
  /// UserProto's `EventLoop.BackendChoice` is for the loop's engine); the
  /// one in use is the mask fd's `backend`, a ``MaskBackendKind``.
  public enum BackendChoice: Hashable, Sendable {
    /// The kernel backend when the running kernel passes the probe, else
    /// the module backend when `/dev/efd_mask` passes it, else the cheapest
    /// emulation layout for the declared usage. The environment variable
    /// `MASKCORE_BACKEND` (`kernel`, `module`, `pair`, `full`, `emulation`)
    /// overrides the choice.
    case automatic
    /// eventfd2(EFD_MASK); throws when the kernel does not have it.
    case kernel
    /// The efd_mask module's `/dev/efd_mask`; throws when the device is
    /// missing, cannot be opened, or fails the probe.
    case module
    /// The stock-kernel emulation; nil picks the layout from the usage.
    case emulation(EmulationLayout?)
  }

  /// The former name of ``MaskFD/BackendChoice``.
  @available(*, deprecated, renamed: "BackendChoice")
  public typealias Backend = BackendChoice

  /// What the caller will set, so the cheapest exact mechanism is picked.
  public enum Usage: Hashable, Sendable {
    /// Readiness as a TCP socket reports it: POLLIN and POLLOUT freely;
    /// POLLERR and POLLHUP together with POLLOUT, POLLHUP also with POLLIN
    /// (and terminal), POLLPRI only with POLLERR. Two fds on the emulation;
    /// every combination on the kernel backend.
    case socket
    /// Any combination. Three fds on the emulation.
    case anyEvents
    /// Only combinations of these events.
    case events(MaskEvents)

    /// The cheapest emulation layout that shows every combination of the
    /// usage that any emulation layout can show.
    public var emulationLayout: EmulationLayout {
      switch self {
      case .socket: return .pair
      case .anyEvents: return .full
      case .events(let declared):
        let wanted = MaskEvents.allCombinations.filter { declared.isSuperset(of: $0) }
        let full = MaskLayout.emulation(.full)
        let pair = MaskLayout.emulation(.pair)
        let needsFull = wanted.contains {
          full.fidelity($0) != .unsupported && pair.fidelity($0) == .unsupported
        }
        return needsFull ? .full : .pair
      }
    }
  }

  private enum Mechanism {
    /// An EFD_MASK eventfd or an efd_mask module fd: the same record and semantics.
    case efdMask(KernelMask)
    case emulated(EmulatedMask)
  }

  private struct Inner {
    var mechanism: Mechanism
    var current = MaskState(events: [])
    var closed = false
  }

  private let inner: Lock<Inner>
  /// `up_fork_generation()` when this mask fd was created.
  private let forkGeneration: UInt

  /// The descriptor to poll. Valid until ``close()``; never close it yourself.
  public let fileDescriptor: Int32
  /// The mechanism in use.
  public let layout: MaskLayout
  /// Why this mechanism was chosen.
  public let selectionReason: String

  /// The backend in use.
  public var backend: MaskBackendKind { layout.backend }
  /// Descriptors this mask fd costs (1 on the kernel and module backends).
  public var descriptorCount: Int { layout.descriptorCount }

  /// Creates a mask fd showing no events, with data 0.
  /// - Throws: ``MaskError/backendUnavailable(_:reason:)`` when `.kernel` is
  ///   requested on a kernel without EFD_MASK, or `.module` where
  ///   `/dev/efd_mask` is missing, unusable or fails the probe; ``MaskError/system(operation:errno:)``
  ///   when the kernel refuses (EMFILE: see ``MaskError/isDescriptorLimit``).
  public init(
    backend: BackendChoice = .automatic, usage: Usage = .socket, options: Options = [.closeOnExec]
  ) throws(MaskError) {
    let (layout, reason) = try MaskFD.choose(backend, usage: usage)
    let mechanism: Mechanism
    switch layout {
    case .kernel:
      mechanism = .efdMask(try KernelMask(options: options))
    case .module:
      mechanism = .efdMask(try KernelMask(moduleDevice: ModuleProbe.devicePath, options: options))
    case .emulation(let emulationLayout):
      mechanism = .emulated(try EmulatedMask(layout: emulationLayout, options: options))
    }
    switch mechanism {
    case .efdMask(let k): fileDescriptor = k.descriptor
    case .emulated(let e): fileDescriptor = e.descriptor
    }
    self.layout = layout
    self.selectionReason = reason
    forkGeneration = up_fork_generation()
    inner = Lock(Inner(mechanism: mechanism))
  }

  deinit {
    inner.withLock { state in
      if !state.closed { MaskFD.release(&state) }
    }
  }

  /// Resolves a backend request to a mechanism and the reason for it.
  public static func choose(_ backend: BackendChoice, usage: Usage = .socket) throws(MaskError) -> (MaskLayout, String)
  {
    try choose(backend, usage: usage, override: getenv("MASKCORE_BACKEND").map { String(cString: $0) })
  }

  /// ``choose(_:usage:)`` with the value of `MASKCORE_BACKEND` given.
  static func choose(_ backend: BackendChoice, usage: Usage, override: String?) throws(MaskError) -> (
    MaskLayout, String
  ) {
    try choose(backend, usage: usage, override: override, kernel: KernelProbe.current, module: { ModuleProbe.current })
  }

  /// The decision with the probes given; the module is probed only when
  /// the kernel backend is not taken.
  static func choose(
    _ backend: BackendChoice, usage: Usage, override: String?, kernel probe: KernelProbe,
    module moduleProbe: () -> ModuleProbe
  ) throws(MaskError) -> (MaskLayout, String) {
    var request = backend
    if backend == .automatic, let forced = override {
      switch forced {
      case "kernel": request = .kernel
      case "module": request = .module
      case "emulation": request = .emulation(nil)
      case "pair": request = .emulation(.pair)
      case "full": request = .emulation(.full)
      case "", "automatic": break
      default:
        throw .invalidConfiguration(
          "MASKCORE_BACKEND=\(forced): expected kernel, module, emulation, pair, full or automatic")
      }
    }
    switch request {
    case .kernel:
      guard probe.isAvailable else { throw .backendUnavailable(.kernel, reason: probe.reason) }
      return (.kernel, probe.reason)
    case .module:
      let module = moduleProbe()
      guard module.isAvailable else { throw .backendUnavailable(.module, reason: module.reason) }
      return (.module, "the module backend was requested: \(module.reason)")
    case .emulation(let layout):
      let chosen = layout ?? usage.emulationLayout
      return (.emulation(chosen), "the emulation was requested; \(chosen) layout")
    case .automatic:
      if probe.isAvailable { return (.kernel, probe.reason) }
      let module = moduleProbe()
      if module.isAvailable {
        return (.module, "\(probe.reason); using the module backend: \(module.reason)")
      }
      let chosen = usage.emulationLayout
      return (
        .emulation(chosen),
        "\(probe.reason); no module backend: \(module.reason); using the emulation's \(chosen) layout (\(chosen.descriptorCount) fds)"
      )
    }
  }

  /// Sets the events and, when given, the data.
  ///
  /// Setting the state that is already set makes no syscall.
  /// - Throws: ``MaskError/invalidEvents(_:)`` for bits outside the five,
  ///   ``MaskError/unsupported(_:backend:reason:)`` for a combination the
  ///   backend cannot show exactly or leaving POLLHUP on the emulation,
  ///   ``MaskError/closed`` after ``close()``, ``MaskError/forkedChild`` in a
  ///   child process. The state is unchanged then.
  public func set(_ events: MaskEvents, data: UInt64? = nil) throws(MaskError) {
    _ = try MaskEvents(validating: events.rawValue)
    try checkProcess()
    try inner.withLock { (state: inout Inner) throws(MaskError) in
      let target = MaskState(events: events, data: data ?? state.current.data)
      try MaskFD.transition(&state, to: target, layout: layout)
    }
  }

  /// Adds and removes events in one atomic step; returns the new events.
  @discardableResult
  public func update(inserting added: MaskEvents = [], removing removed: MaskEvents = []) throws(MaskError)
    -> MaskEvents
  {
    _ = try MaskEvents(validating: added.rawValue | removed.rawValue)
    try checkProcess()
    return try inner.withLock { (state: inout Inner) throws(MaskError) -> MaskEvents in
      var target = state.current
      target.events.subtract(removed)
      target.events.formUnion(added)
      try MaskFD.transition(&state, to: target, layout: layout)
      return target.events
    }
  }

  /// The state last set, like the seed's read(2). No syscall.
  public func get() throws(MaskError) -> MaskState {
    try inner.withLock { (state: inout Inner) throws(MaskError) -> MaskState in
      if state.closed { throw .closed }
      return state.current
    }
  }

  /// Reads the state back from the kernel object: the events poll(2) reports
  /// now and the data stored in the fd.
  public func readBack() throws(MaskError) -> MaskState {
    try inner.withLock { (state: inout Inner) throws(MaskError) -> MaskState in
      if state.closed { throw .closed }
      switch state.mechanism {
      case .efdMask(let k): return try k.readBack()
      case .emulated(let e): return try e.readBack()
      }
    }
  }

  /// Wakes every waiter again without changing the state, so edge-triggered
  /// consumers get a new edge for the events that are set.
  public func resignal() throws(MaskError) {
    try checkProcess()
    try inner.withLock { (state: inout Inner) throws(MaskError) in
      if state.closed { throw .closed }
      switch state.mechanism {
      case .efdMask(let k):
        try k.apply(state.current)
      case .emulated(var e):
        defer { state.mechanism = .emulated(e) }
        try e.resignal()
      }
    }
  }

  /// Puts the last-set state back if something else changed what the fd
  /// shows: a consumer that read the fd (on the emulation a read consumes
  /// POLLIN), fetched its SO_ERROR, or wrote it (on the kernel backend a
  /// write replaces the mask). Costs one read-back when nothing changed.
  /// - Returns: true when the fd had drifted and was repaired.
  /// - Throws: ``MaskError/unsupported(_:backend:reason:)`` when the
  ///   emulation cannot undo what was done (the fd was shut down, sent on or
  ///   its buffer resized by someone else).
  @discardableResult
  public func resync() throws(MaskError) -> Bool {
    try checkProcess()
    return try inner.withLock { (state: inout Inner) throws(MaskError) -> Bool in
      if state.closed { throw .closed }
      switch state.mechanism {
      case .efdMask(let k):
        return try k.repair(to: state.current)
      case .emulated(var e):
        defer { state.mechanism = .emulated(e) }
        return try e.repair(to: state.current)
      }
    }
  }

  /// Closes the descriptor and everything behind it.
  /// - Throws: ``MaskError/closed`` when already closed.
  public func close() throws(MaskError) {
    try inner.withLock { (state: inout Inner) throws(MaskError) in
      if state.closed { throw .closed }
      MaskFD.release(&state)
    }
  }

  /// True once ``close()`` has run.
  public var isClosed: Bool { inner.withLock { $0.closed } }

  // MARK: Internals

  private func checkProcess() throws(MaskError) {
    if up_fork_generation() != forkGeneration { throw .forkedChild }
  }

  private static func release(_ state: inout Inner) {
    switch state.mechanism {
    case .efdMask(let k): k.close()
    case .emulated(let e): e.close()
    }
    state.closed = true
  }

  private static func transition(_ state: inout Inner, to target: MaskState, layout: MaskLayout) throws(MaskError) {
    if state.closed { throw .closed }
    if target == state.current { return }
    if let why = layout.unsupportedReason(target.events) {
      throw .unsupported(target.events, backend: layout.description, reason: why)
    }
    if layout.backend == .emulation, state.current.events.contains(.hangup), !target.events.contains(.hangup) {
      throw .unsupported(
        target.events, backend: layout.description,
        reason: "POLLHUP is terminal on the emulation: once set it cannot be cleared")
    }
    switch state.mechanism {
    case .efdMask(let k):
      try k.apply(target)
      state.current = target
    case .emulated(var e):
      do {
        try e.apply(target)
        state.mechanism = .emulated(e)
        state.current = target
      } catch {
        // A kernel call failed part-way: record what the fd really shows so
        // that get() never reports a state the fd does not have.
        state.mechanism = .emulated(e)
        state.current = MaskState(events: e.visible, data: (try? e.readBack().data) ?? state.current.data)
        throw error
      }
    }
  }
}
