import CUserProtoShim
import Dispatch
import Glibc
import Synchronization

/// An event loop that owns one thread. It runs tasks scheduled from any
/// thread, timers ordered by deadline, and the completions of I/O operations
/// driven by io_uring, or by epoll where io_uring is unavailable.
///
/// Work submitted to a loop runs on its thread, one item at a time, so
/// protocol code running on the loop needs no locks. Methods marked
/// "on the loop" must be called from the loop's thread.
public final class EventLoop: @unchecked Sendable {
  /// The readiness and I/O engine.
  public enum Backend: String, Sendable, CustomStringConvertible {
    case ioUring = "io_uring"
    case epoll
    public var description: String { rawValue }
  }

  /// Which engine to use.
  public enum BackendChoice: Sendable, Hashable {
    /// io_uring, falling back to epoll when io_uring is refused. The
    /// environment variable `USERPROTO_LOOP_BACKEND` (`io_uring`, `epoll`)
    /// forces one.
    case automatic
    case ioUring
    case epoll
  }

  public struct Configuration: Sendable {
    public var backend: BackendChoice
    /// Submission queue entries of the io_uring ring.
    public var ringEntries: UInt32
    public var name: String
    /// Test hook: makes io_uring set-up fail with this errno.
    var injectedSetupError: Int32?
    /// Test hook: ignore `USERPROTO_LOOP_BACKEND`.
    var honorsEnvironment = true
    public init(backend: BackendChoice = .automatic, ringEntries: UInt32 = 256, name: String = "userproto-loop") {
      self.backend = backend
      self.ringEntries = ringEntries
      self.name = name
    }
  }

  /// The loop's name (also its thread's name).
  public let name: String
  /// The engine in use.
  public let backend: Backend
  /// Why this engine is in use (for example, why io_uring was refused).
  public let backendReason: String
  /// What the engine found at start-up (multishot support, buffers).
  public let capabilities: [String]

  // Cross-thread state.
  private struct Shared {
    var tasks: [() -> Void] = []
    var state: State = .running
  }
  private enum State { case running, shuttingDown, shutDown }
  private let shared = Mutex(Shared())
  /// True while the loop thread is (about to be) blocked in the backend.
  private let sleeping = Atomic<Bool>(false)
  private let threadID = Atomic<UInt>(0)
  private struct Exit {
    var done = false
    var continuations: [CheckedContinuation<Void, Never>] = []
    var semaphores: [DispatchSemaphore] = []
  }
  private let exit = Mutex(Exit())

  // Loop-confined state.
  let engine: any LoopBackend
  private var timers = TimerHeap()
  private struct TimerAction {
    var run: () -> Void
    var onShutdown: (() -> Void)?
  }
  private var timerActions: [UInt64: TimerAction] = [:]
  private var timerSequence: UInt64 = 0
  var operations = OperationTable()
  /// Completions that arrived for a token no longer live (counted, dropped).
  private(set) var staleCompletions = 0

  /// Starts a loop with its own thread.
  /// - Throws: ``IOError`` when neither io_uring (if requested) nor epoll can
  ///   be set up.
  public init(configuration: Configuration = Configuration()) throws(IOError) {
    let (engine, reason) = try EventLoop.makeEngine(configuration)
    self.engine = engine
    name = configuration.name
    backend = engine.kind
    backendReason = reason
    capabilities = engine.capabilities
    let box = Unmanaged.passRetained(self).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    defer { pthread_attr_destroy(&attributes) }
    var thread = pthread_t()
    let rc = pthread_create(
      &thread, &attributes,
      { raw in
        let loop = Unmanaged<EventLoop>.fromOpaque(raw!).takeRetainedValue()
        loop.run()
        return nil
      }, box)
    if rc != 0 {
      Unmanaged<EventLoop>.fromOpaque(box).release()
      engine.close()
      throw IOError("pthread_create", rc)
    }
  }

  private static func makeEngine(_ configuration: Configuration) throws(IOError) -> (any LoopBackend, String) {
    var choice = configuration.backend
    if choice == .automatic, configuration.honorsEnvironment, let forced = getenv("USERPROTO_LOOP_BACKEND") {
      switch String(cString: forced) {
      case "io_uring", "iouring", "uring": choice = .ioUring
      case "epoll": choice = .epoll
      default: break
      }
    }
    switch choice {
    case .epoll:
      return (try EpollBackend(), "epoll was requested")
    case .ioUring:
      return (try URingBackend(configuration), "io_uring was requested")
    case .automatic:
      do {
        return (try URingBackend(configuration), "io_uring is available")
      } catch {
        let why =
          switch error.code {
          case EPERM: "io_uring refused with EPERM (kernel.io_uring_disabled or a seccomp filter)"
          case ENOSYS: "io_uring unavailable (ENOSYS: kernel without io_uring, or a seccomp filter)"
          case ENOMEM: "io_uring ring set-up failed with ENOMEM (locked-memory or memory limit)"
          default: "io_uring set-up failed: \(error)"
          }
        return (try EpollBackend(), "\(why); using epoll")
      }
    }
  }

  /// True when called on this loop's thread.
  public var inEventLoop: Bool { threadID.load(ordering: .acquiring) == UInt(pthread_self()) }

  // MARK: Tasks

  /// Runs `task` on the loop. Safe from any thread.
  /// - Throws: ``LoopError/shutDown`` once shutdown has begun.
  public func execute(_ task: @escaping @Sendable () -> Void) throws(LoopError) {
    try enqueue(task)
  }

  func enqueue(_ task: @escaping () -> Void) throws(LoopError) {
    try shared.withLock { (s: inout Shared) throws(LoopError) in
      guard s.state == .running else { throw LoopError.shutDown }
      s.tasks.append(task)
    }
    // Only a sleeping loop needs the (syscall) wake-up.
    if !inEventLoop, sleeping.exchange(false, ordering: .acquiringAndReleasing) {
      engine.wakeup()
    }
  }

  // MARK: Timers

  /// A scheduled timer; cancel it from any thread.
  public struct Scheduled: Sendable, Hashable {
    let id: UInt64
    let loop: EventLoop

    public static func == (a: Scheduled, b: Scheduled) -> Bool { a.id == b.id && a.loop === b.loop }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Cancels the timer; a cancelled timer never runs. Cancelling a timer
    /// that already ran, or on a loop that shut down, does nothing.
    public func cancel() {
      if loop.inEventLoop {
        loop.cancelTimer(id)
      } else {
        let loop = self.loop
        let id = self.id
        try? loop.enqueue { loop.cancelTimer(id) }
      }
    }
  }

  private static let nextTimerID = Atomic<UInt64>(1)

  /// Runs `task` on the loop once `delay` has passed.
  @discardableResult
  public func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) throws(LoopError) -> Scheduled {
    try schedule(atNanoseconds: EventLoop.now() &+ EventLoop.nanoseconds(delay), task)
  }

  /// Runs `task` on the loop at a monotonic deadline (``now()`` nanoseconds).
  @discardableResult
  public func schedule(atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void) throws(LoopError)
    -> Scheduled
  {
    try schedule(atNanoseconds: deadline, task, onShutdown: nil)
  }

  /// Like ``schedule(atNanoseconds:_:)``, plus `onShutdown`, which runs
  /// instead of `task` if the loop shuts down first.
  @discardableResult
  func schedule(
    atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void,
    onShutdown: (@Sendable () -> Void)?
  ) throws(LoopError) -> Scheduled {
    let id = EventLoop.nextTimerID.wrappingAdd(1, ordering: .relaxed).oldValue
    let action = TimerAction(run: task, onShutdown: onShutdown)
    if inEventLoop {
      guard shared.withLock({ $0.state == .running }) else { throw LoopError.shutDown }
      addTimer(id: id, deadline: deadline, action)
    } else {
      try enqueue { [self] in addTimer(id: id, deadline: deadline, action) }
    }
    return Scheduled(id: id, loop: self)
  }

  private func addTimer(id: UInt64, deadline: UInt64, _ action: TimerAction) {
    timerSequence += 1
    timers.insert(.init(deadline: deadline, sequence: timerSequence, id: id))
    timerActions[id] = action
  }

  private func cancelTimer(_ id: UInt64) { timerActions[id] = nil }

  /// Timers scheduled and not yet run or cancelled.
  var pendingTimers: Int { timerActions.count }

  /// The monotonic clock in nanoseconds.
  public static func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
  }

  static func nanoseconds(_ d: Duration) -> UInt64 {
    let (seconds, attoseconds) = d.components
    guard seconds >= 0 else { return 0 }
    return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
  }

  // MARK: The loop

  private func run() {
    up_set_thread_name(name)
    threadID.store(UInt(pthread_self()), ordering: .releasing)
    do {
      try engine.start()
    } catch {
      failAllOperations(error)
    }
    while true {
      runTasks()
      let now = EventLoop.now()
      runTimers(now: now)
      if shared.withLock({ $0.state != .running }) { break }
      var timeout: Int64? = nil
      if let next = nextDeadline() { timeout = Int64(next > now ? next - now : 0) }
      sleeping.store(true, ordering: .releasing)
      if shared.withLock({ !$0.tasks.isEmpty || $0.state != .running }) { timeout = 0 }
      do {
        try engine.wait(timeout: timeout) { self.dispatch($0) }
      } catch {
        failAllOperations(error)
      }
      sleeping.store(false, ordering: .releasing)
    }
    drainForShutdown()
  }

  private func runTasks() {
    let batch = shared.withLock { s -> [() -> Void] in
      let tasks = s.tasks
      s.tasks = []
      return tasks
    }
    for task in batch { task() }
  }

  private func nextDeadline() -> UInt64? {
    while let first = timers.first, timerActions[first.id] == nil { timers.removeFirst() }
    return timers.first?.deadline
  }

  private func runTimers(now: UInt64) {
    while let first = timers.first, first.deadline <= now {
      timers.removeFirst()
      if let action = timerActions.removeValue(forKey: first.id) { action.run() }
    }
  }

  private func dispatch(_ completion: LoopCompletion) {
    guard let handler = operations.handler(for: completion.token) else {
      staleCompletions += 1
      // A connection accepted for a cancelled accept: nobody owns it.
      if case .accepted(let fd) = completion.value { Glibc.close(fd) }
      return
    }
    if completion.isFinal { operations.release(completion.token) }
    handler(completion.value)
  }

  private func failAllOperations(_ error: IOError) {
    for (token, handler) in operations.drain() {
      engine.cancel(token: token)
      handler(.failed(error))
    }
  }

  // MARK: Shutdown

  /// Stops the loop: pending timers are cancelled, in-flight operations end
  /// with ECANCELED, tasks already queued run, and the thread exits. Safe
  /// from any thread except the loop's own; returns when the loop has stopped.
  public func shutdown() async {
    beginShutdown()
    if inEventLoop { return }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
      let done = exit.withLock { e -> Bool in
        if !e.done { e.continuations.append(c) }
        return e.done
      }
      if done { c.resume() }
    }
  }

  /// Stops the loop and blocks until it has stopped. Not on the loop.
  public func shutdownAndWait() {
    precondition(!inEventLoop, "shutdownAndWait() would deadlock on the loop's own thread")
    beginShutdown()
    let semaphore = DispatchSemaphore(value: 0)
    let done = exit.withLock { e -> Bool in
      if !e.done { e.semaphores.append(semaphore) }
      return e.done
    }
    if !done { semaphore.wait() }
  }

  /// True once the loop has stopped.
  public var isShutDown: Bool { exit.withLock { $0.done } }

  /// Marks the loop as shutting down; true for the first caller.
  @discardableResult
  private func beginShutdown() -> Bool {
    let first = shared.withLock { s -> Bool in
      guard s.state == .running else { return false }
      s.state = .shuttingDown
      return true
    }
    if first { engine.wakeup() }
    return first
  }

  private func drainForShutdown() {
    timers.removeAll()
    let pending = timerActions.values
    timerActions.removeAll()
    for action in pending { action.onShutdown?() }
    // Cancel every operation and wait for the final completions, so that no
    // buffer is freed while the kernel may still write to it.
    for token in operations.liveTokens { engine.cancel(token: token) }
    var rounds = 0
    while operations.count > 0 && rounds < 1000 {
      runTasks()
      try? engine.wait(timeout: 10_000_000) { self.dispatch($0) }
      rounds += 1
    }
    for (_, handler) in operations.drain() { handler(.failed(IOError("shutdown", ECANCELED))) }
    runTasks()
    shared.withLock { $0.state = .shutDown }
    runTasks()
    engine.close()
    threadID.store(0, ordering: .releasing)
    let (continuations, semaphores) = exit.withLock { e in
      e.done = true
      defer {
        e.continuations = []
        e.semaphores = []
      }
      return (e.continuations, e.semaphores)
    }
    for c in continuations { c.resume() }
    for s in semaphores { s.signal() }
  }
}
