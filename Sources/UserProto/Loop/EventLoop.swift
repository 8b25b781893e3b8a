import CUserProtoShim
import Dispatch
import Glibc
import Locking
public import Logging
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
    /// io_uring: readiness, accepts, receives, connects and sends are ring operations.
    case ioUring = "io_uring"
    /// epoll, edge-triggered: operations are non-blocking system calls made when their fd is ready.
    case epoll
    /// The raw value: `io_uring` or `epoll`.
    public var description: String { rawValue }
  }

  /// Which engine to use.
  public enum BackendChoice: Sendable, Hashable {
    /// io_uring, falling back to epoll when io_uring is refused. The
    /// environment variable `USERPROTO_LOOP_BACKEND` (`io_uring`, `epoll`)
    /// forces one.
    case automatic
    /// io_uring only: the loop fails to start when it is refused.
    case ioUring
    /// epoll only.
    case epoll
  }

  /// How a loop is set up: its engine, ring size and name.
  public struct Configuration: Sendable {
    /// Which engine to use (default ``EventLoop/BackendChoice/automatic``).
    public var backend: BackendChoice
    /// Submission queue entries of the io_uring ring.
    public var ringEntries: UInt32
    /// The loop's name, also its thread's name (default `userproto-loop`).
    public var name: String
    /// Test hook: system calls of the loop's engine made to fail.
    @_spi(Testing) public var faults: LoopFaults?
    /// Test hook: ignore `USERPROTO_LOOP_BACKEND`.
    @_spi(Testing) public var honorsEnvironment = true
    /// A configuration; by default the automatic engine choice, a 256-entry ring and the name `userproto-loop`.
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
  /// What the engine found at start-up (multishot support, buffers), and
  /// any feature it later had to give up (a multishot the kernel refused).
  public var capabilities: [String] { engine.capabilities }
  /// Where the loop logs (docs/logging.md), with `loop.name` set.
  public let logger: Logger

  // Cross-thread state.
  private struct Shared {
    var tasks: [() -> Void] = []
    var state: State = .running
  }
  private enum State { case running, shuttingDown, shutDown }
  private let shared = Lock(Shared())
  /// True while the loop thread is (about to be) blocked in the engine.
  private let sleeping = Atomic<Bool>(false)
  private let threadID = Atomic<UInt>(0)
  /// Runs executor jobs one at a time once the loop has stopped; activated
  /// only after the loop thread ran its last task, so the two never overlap.
  private let afterShutdown: DispatchQueue
  /// The thread running a job on `afterShutdown`, if any.
  private let fallbackThread = Atomic<UInt>(0)
  private struct Exit {
    var done = false
    var continuations: [CheckedContinuation<Void, Never>] = []
    var semaphores: [DispatchSemaphore] = []
  }
  private let exit = Lock(Exit())

  // Loop-confined state.
  let engine: any LoopEngine
  /// The configuration's fault table (tests), bound on the loop's thread
  /// and around the calls made for the loop on other threads (a listen's).
  let faults: LoopFaults?
  private var timers = TimerHeap()
  private struct TimerAction {
    var run: () -> Void
    var onShutdown: (() -> Void)?
    var state: TimerState
  }
  /// Set once shutdown cleared the timers: a timer added later ends at once.
  private var timersClosed = false
  private var timerActions: [UInt64: TimerAction] = [:]
  private var timerSequence: UInt64 = 0
  var operations = OperationTable()
  /// Completions that arrived for a token no longer live (counted, dropped).
  private(set) var staleCompletions = 0
  /// Consecutive failures of the engine's wait, and the current back-off.
  private(set) var engineFailures = 0
  private(set) var engineBackoffMilliseconds: Int32 = 0
  /// Waits in the engine so far (tests: a far timer must not make it spin).
  private(set) var engineWaits = 0
  private let truncated = Atomic<Int>(0)

  /// Datagrams dropped because they were longer than the receive buffer
  /// (64 KiB, more than UDP carries, so only other datagram sockets, such as
  /// Unix-domain ones, can send such a datagram). A receive never delivers
  /// a datagram cut short. Safe from any thread.
  public var truncatedDatagrams: Int { truncated.load(ordering: .relaxed) }

  /// Starts a loop with its own thread.
  ///
  /// The engine is started on the new thread before this returns: an
  /// io_uring ring that cannot be enabled there makes an automatic choice
  /// fall back to epoll (the reason is in ``backendReason``).
  ///
  /// The loop logs the engine it chose and why to `logger` (info), and a
  /// refused io_uring it fell back from (notice), with `loop.name` set
  /// (docs/logging.md); by default it logs nothing.
  /// - Throws: ``IOError`` when neither io_uring (if requested) nor epoll can
  ///   be set up.
  public init(configuration: Configuration = Configuration(), logger: Logger = DisabledLogger.shared)
    throws(IOError)
  {
    var logger = logger
    logger[metadataKey: "loop.name"] = "\(configuration.name)"
    // The engine's set-up calls see the configuration's fault table (tests).
    let (engine, reason, choice, starter) = try LoopFaults.binding(configuration.faults) {
      () throws(IOError) -> (any LoopEngine, String, BackendChoice, LoopStarter) in
      try EventLoop.startEngine(configuration)
    }
    self.engine = engine
    faults = configuration.faults
    name = configuration.name
    backend = engine.kind
    backendReason = reason
    self.logger = logger
    afterShutdown = DispatchQueue(label: "\(configuration.name).after-shutdown", attributes: .initiallyInactive)
    threadID.store(starter.threadID, ordering: .releasing)
    starter.proceed(with: self)
    // An automatic choice tries io_uring first: epoll means it was refused.
    let kind = engine.kind
    if choice == .automatic && kind == .epoll {
      logger.notice("io_uring refused; falling back to epoll", metadata: ["loop.backend_reason": "\(reason)"])
    }
    logger.info(
      "event loop started", metadata: ["loop.backend": "\(kind)", "loop.backend_reason": "\(reason)"])
  }

  /// The started engine, why it was chosen, the choice after the
  /// environment, and the thread it runs on.
  private static func startEngine(_ configuration: Configuration) throws(IOError) -> (
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

  /// True when called on this loop's thread.
  public var inEventLoop: Bool { threadID.load(ordering: .acquiring) == UInt(pthread_self()) }

  // MARK: Tasks

  /// Runs `task` on the loop. Safe from any thread.
  /// - Throws: ``LoopError/shutDown`` once shutdown has begun.
  public func execute(_ task: @escaping @Sendable () -> Void) throws(LoopError) {
    try enqueue(task)
  }

  func enqueue(_ task: @escaping () -> Void) throws(LoopError) {
    try enqueue(task, whileShuttingDown: false)
  }

  /// With `whileShuttingDown` (executor jobs), a task is still taken until
  /// the loop ran its last task; it then runs before the loop stops.
  func enqueue(_ task: @escaping () -> Void, whileShuttingDown: Bool) throws(LoopError) {
    try shared.withLock { (s: inout Shared) throws(LoopError) in
      guard s.state == .running || (whileShuttingDown && s.state == .shuttingDown) else { throw LoopError.shutDown }
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
    let state: TimerState

    /// True for the same timer of the same loop.
    public static func == (a: Scheduled, b: Scheduled) -> Bool { a.id == b.id && a.loop === b.loop }
    /// Hashes the timer's id.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Cancels the timer, from any thread. Returns true when it was
    /// cancelled in time: it has not run and never will. False when it
    /// already ran (or is running), was cancelled before, or the loop shut
    /// down first.
    @discardableResult
    public func cancel() -> Bool {
      guard state.cancel() else { return false }
      // The entry itself goes lazily (the heap compacts when half of it is
      // cancelled); the action is dropped on the loop.
      if loop.inEventLoop {
        loop.cancelTimer(id)
      } else {
        let loop = self.loop
        let id = self.id
        try? loop.enqueue { loop.cancelTimer(id) }
      }
      return true
    }
  }

  private static let nextTimerID = Atomic<UInt64>(1)

  /// Runs `task` on the loop once `delay` has passed. A zero or negative
  /// delay runs it as soon as possible; one too long for the clock (over
  /// about 584 years, `.seconds(Int64.max)` say) never runs it, until it is
  /// cancelled or the loop shuts down.
  @discardableResult
  public func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) throws(LoopError) -> Scheduled {
    try schedule(atNanoseconds: EventLoop.deadline(after: delay), task)
  }

  /// Runs `task` on the loop at a monotonic deadline (``now()`` nanoseconds).
  /// `UInt64.max` is never: the timer does not run, and the loop does not
  /// wake up for it.
  @discardableResult
  public func schedule(atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void) throws(LoopError)
    -> Scheduled
  {
    try schedule(atNanoseconds: deadline, task, onShutdown: nil)
  }

  /// Like ``schedule(atNanoseconds:_:)``, plus `onShutdown`, which runs
  /// instead of `task` if the loop shuts down first. Exactly one of them
  /// runs unless the timer is cancelled.
  @discardableResult
  func schedule(
    atNanoseconds deadline: UInt64, _ task: @escaping @Sendable () -> Void,
    onShutdown: (@Sendable () -> Void)?
  ) throws(LoopError) -> Scheduled {
    let id = EventLoop.nextTimerID.wrappingAdd(1, ordering: .relaxed).oldValue
    let state = TimerState()
    let action = TimerAction(run: task, onShutdown: onShutdown, state: state)
    if inEventLoop {
      guard shared.withLock({ $0.state == .running }) else { throw LoopError.shutDown }
      addTimer(id: id, deadline: deadline, action)
    } else {
      try enqueue { [self] in addTimer(id: id, deadline: deadline, action) }
    }
    return Scheduled(id: id, loop: self, state: state)
  }

  private func addTimer(id: UInt64, deadline: UInt64, _ action: TimerAction) {
    if timersClosed {
      // Queued before shutdown began, run after the timers were cleared.
      if action.state.fire() { action.onShutdown?() }
      return
    }
    timerSequence += 1
    timers.insert(.init(deadline: deadline, sequence: timerSequence, id: id))
    timerActions[id] = action
  }

  private func cancelTimer(_ id: UInt64) {
    guard timerActions.removeValue(forKey: id) != nil else { return }
    // Cancel-and-reschedule patterns would otherwise grow the heap forever.
    if timers.count > 64 && timers.count > 2 * timerActions.count {
      timers.removeAll { timerActions[$0.id] == nil }
    }
  }

  /// Entries in the timer heap, cancelled ones not yet dropped included.
  var timerHeapCount: Int { timers.count }

  /// Timers scheduled and not yet run or cancelled.
  var pendingTimers: Int { timerActions.count }

  /// The monotonic clock in nanoseconds.
  public static func now() -> UInt64 { Sys.monotonicNanoseconds() }

  /// A deadline that never comes (``schedule(atNanoseconds:_:)``).
  static let never = UInt64.max

  /// The longest the engine is asked to wait at once; a later deadline is
  /// waited for in several waits. No engine or kernel then sees a huge
  /// timeout: one added to the current time without saturating (as
  /// io_uring_enter may do) would wrap into the past and end every wait at
  /// once.
  static let longestWait: UInt64 = 86_400 * 1_000_000_000

  /// `d` in whole nanoseconds, saturating: a negative duration is 0, one
  /// over `UInt64.max` nanoseconds (about 584 years) is `UInt64.max`.
  static func nanoseconds(_ d: Duration) -> UInt64 {
    let attoseconds = d.attoseconds
    guard attoseconds > 0 else { return 0 }
    let nanoseconds = attoseconds / 1_000_000_000
    return nanoseconds >= Int128(UInt64.max) ? .max : UInt64(nanoseconds)
  }

  /// The deadline `delay` after `start` (default: now), saturating at
  /// ``never``, so a huge delay is never rather than a deadline in the past.
  static func deadline(after delay: Duration, from start: UInt64 = EventLoop.now()) -> UInt64 {
    let (sum, overflow) = start.addingReportingOverflow(nanoseconds(delay))
    return overflow ? never : sum
  }

  // MARK: The loop

  /// The loop itself, on its thread (started by ``LoopStarter``).
  func run() {
    while true {
      runTasks()
      let now = EventLoop.now()
      runTimers(now: now)
      if shared.withLock({ $0.state != .running }) { break }
      var timeout: Int64? = nil
      if let next = nextDeadline(), next != EventLoop.never {
        timeout = Int64(min(next > now ? next - now : 0, EventLoop.longestWait))
      }
      sleeping.store(true, ordering: .releasing)
      if shared.withLock({ !$0.tasks.isEmpty || $0.state != .running }) { timeout = 0 }
      engineWaits += 1
      do {
        try engine.wait(timeout: timeout) { self.dispatch($0) }
        engineFailures = 0
        engineBackoffMilliseconds = 0
      } catch {
        engineFailures += 1
        failAllOperations(error)
        if engineFailures > 1 {
          // A persistently failing engine: back off (1, 2, 4 ... 128 ms)
          // instead of spinning; a wake-up or the next deadline ends it.
          engineBackoffMilliseconds = Int32(1 << min(engineFailures - 2, 7))
          var pause = engineBackoffMilliseconds
          if let timeout { pause = Int32(min(Int64(pause), timeout / 1_000_000 + (timeout % 1_000_000 > 0 ? 1 : 0))) }
          if pause > 0 { engine.pause(milliseconds: pause) }
        }
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
    while let first = timers.first, timerActions[first.id]?.state.isPending != true {
      timers.removeFirst()
      timerActions[first.id] = nil
    }
    return timers.first?.deadline
  }

  private func runTimers(now: UInt64) {
    while let first = timers.first, first.deadline <= now {
      timers.removeFirst()
      // A cancel from another thread wins if it got there first.
      if let action = timerActions.removeValue(forKey: first.id), action.state.fire() { action.run() }
    }
  }

  private func dispatch(_ completion: LoopCompletion) {
    guard let handler = operations.handler(for: completion.token) else {
      staleCompletions += 1
      // A connection accepted for a cancelled accept: nobody owns it.
      if case .accepted(let fd) = completion.value { Sys.close(fd) }
      return
    }
    if completion.isFinal { operations.release(completion.token) }
    if case .truncated = completion.value {
      truncated.add(1, ordering: .relaxed)
      return
    }
    handler(completion.value)
  }

  private func failAllOperations(_ error: IOError) {
    for (token, handler) in operations.drain() {
      engine.cancel(token: token)
      handler(.failed(error))
    }
  }

  // MARK: Shutdown

  /// Runs `job` on the serial after-shutdown queue.
  func runAfterShutdown(_ job: @escaping @Sendable () -> Void) {
    afterShutdown.async { [self] in
      fallbackThread.store(UInt(pthread_self()), ordering: .releasing)
      job()
      fallbackThread.store(0, ordering: .releasing)
    }
  }

  /// True while an executor job runs on the after-shutdown queue, on its thread.
  var runsAfterShutdownJob: Bool { fallbackThread.load(ordering: .acquiring) == UInt(pthread_self()) }

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
  func beginShutdown() -> Bool {
    let first = shared.withLock { s -> Bool in
      guard s.state == .running else { return false }
      s.state = .shuttingDown
      return true
    }
    if first { engine.wakeup() }
    return first
  }

  private func drainForShutdown() {
    // Tasks queued before shutdown began may add timers: run them first;
    // a timer added after the clearing below ends at once (addTimer).
    runTasks()
    timersClosed = true
    timers.removeAll()
    let pending = timerActions.values
    timerActions.removeAll()
    for action in pending where action.state.fire() { action.onShutdown?() }
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
    // Executor jobs taken until now run here; later ones go to
    // `afterShutdown`, which starts only after this last batch.
    runTasks()
    engine.close()
    threadID.store(0, ordering: .releasing)
    afterShutdown.activate()
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
