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
///
/// Its parts are in `EventLoop+Engine.swift` (choosing and starting the
/// engine), `EventLoop+Timers.swift`, `EventLoop+IO.swift` (operations),
/// `EventLoop+Concurrency.swift` (the executor, async entry points) and
/// `EventLoop+Shutdown.swift`.
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
  struct Shared {
    var tasks: [() -> Void] = []
    var state: State = .running
  }
  enum State { case running, shuttingDown, shutDown }
  let shared = Lock(Shared())
  /// True while the loop thread is (about to be) blocked in the engine.
  private let sleeping = Atomic<Bool>(false)
  let threadID = Atomic<UInt>(0)
  /// Runs executor jobs one at a time once the loop has stopped; activated
  /// only after the loop thread ran its last task, so the two never overlap.
  let afterShutdown: DispatchQueue
  /// The thread running a job on `afterShutdown`, if any.
  let fallbackThread = Atomic<UInt>(0)
  struct Exit {
    var done = false
    var continuations: [CheckedContinuation<Void, Never>] = []
    var semaphores: [DispatchSemaphore] = []
  }
  let exit = Lock(Exit())

  // Loop-confined state.
  let engine: any LoopEngine
  /// The configuration's fault table (tests), bound on the loop's thread
  /// and around the calls made for the loop on other threads (a listen's).
  let faults: LoopFaults?
  var timers = TimerHeap()
  struct TimerAction {
    var run: () -> Void
    var onShutdown: (() -> Void)?
    var state: TimerState
  }
  /// Set once shutdown cleared the timers: a timer added later ends at once.
  var timersClosed = false
  var timerActions: [UInt64: TimerAction] = [:]
  var timerSequence: UInt64 = 0
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

  func runTasks() {
    let batch = shared.withLock { s -> [() -> Void] in
      let tasks = s.tasks
      s.tasks = []
      return tasks
    }
    for task in batch { task() }
  }

  func dispatch(_ completion: LoopCompletion) {
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
}
