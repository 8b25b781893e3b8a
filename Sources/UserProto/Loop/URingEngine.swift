import CUserProtoShim
import Glibc
import Locking
import MaskCore

/// The io_uring engine (liburing). Readiness is multishot POLL_ADD;
/// accept and receive are multishot (receive selects from a ring of provided
/// buffers) where the kernel supports them; connect and send are single
/// operations whose buffers the engine owns until their completion arrives.
///
/// This file holds its state, its set-up, the submission queue and the
/// wait; `URingEngine+Operations.swift` submits and arms operations,
/// `URingEngine+Completions.swift` handles what the kernel completes, and
/// `URingEngine+FileReuse.swift` detects fd numbers reused by another file.
final class URingEngine: LoopEngine {
  let kind = EventLoop.Backend.ioUring
  var capabilities: [String] { capabilityLog.withLock { $0 } }
  /// Loop-confined.
  var pressure = EnginePressure()
  private let capabilityLog: Lock<[String]>

  let ring: OpaquePointer
  private let wake: WakeEvent
  private let wakeBuffer: UnsafeMutablePointer<UInt64>
  /// False after re-arming the wake-up read failed: retried before each wait.
  var wakeArmed = false
  var bufferRing: OpaquePointer?
  /// Multishot variants in use; each is given up (for single-shot) when the
  /// kernel refuses it with EINVAL.
  var multishotPoll = true
  var multishotAccept = true
  var multishotReceive: Bool
  private var cqes = [up_cqe](repeating: up_cqe(), count: 256)
  /// Completions made up by fault injection, delivered by the next reap.
  var refusals: [up_cqe] = []
  /// Completions reaped to make room in a full completion queue while SQEs
  /// were submitted outside `wait` (a cancel): handled, in order, before
  /// the next ones are reaped.
  private var held: [up_cqe] = []

  /// What each in-flight operation owns, by token.
  enum Record {
    case poll(fd: Int32, events: UInt32, multishot: Bool)
    case accept(fd: Int32, multishot: Bool)
    case connect(fd: Int32, buffer: UnsafeMutableRawBufferPointer)
    /// A multishot receive has no buffer of its own (provided buffers).
    case receive(fd: Int32, buffer: UnsafeMutableRawBufferPointer?, datagram: Bool)
    case send(UnsafeMutableRawBufferPointer)
    /// A single-shot RECVMSG into `message`, armed again after each datagram.
    case receiveFrom(fd: Int32, message: OpaquePointer)
    case sendTo(message: OpaquePointer)

    var multishot: Bool {
      switch self {
      case .poll(_, _, let multishot), .accept(_, let multishot): multishot
      case .receive(_, let buffer, _): buffer == nil
      case .connect, .send, .receiveFrom, .sendTo: false
      }
    }
  }
  var records: [UInt64: Record] = [:]
  /// Tokens whose cancellation was requested; completions for them end them.
  var cancelling: Set<UInt64> = []
  /// Operations to arm again at the start of the next wait (a multishot
  /// the kernel ended, or a single-shot that completed). Not re-armed while
  /// reaping: a readable fd whose watch keeps ending on an overflowing CQ
  /// would otherwise keep the loop reaping forever.
  var rearms: [UInt64] = []
  /// Cancellations that found the submission queue full: retried in wait.
  private var cancelBacklog: [UInt64] = []

  /// The file behind an fd number when its operations were submitted.
  struct FileID: Equatable {
    var device: UInt64
    var inode: UInt64
  }
  /// Long-lived operations (watch, accept, receive, connect) by fd number,
  /// with the file they were submitted for, to detect a number reused
  /// after a close without cancel.
  var fileUsers: [Int32: (file: FileID, tokens: Set<UInt64>)] = [:]
  /// Operations whose fd was closed while they ran: they end with EBADF.
  var staleTokens: Set<UInt64> = []

  /// Send buffers the kernel owns until their completion: reused from a
  /// small pool, so the loop does not allocate (and fault in) a fresh
  /// buffer of up to 256 KiB for every send.
  var sendPool: [UnsafeMutableRawBufferPointer] = []

  // Internal tokens never collide with the loop's (generation >= 1).
  static let wakeToken: UInt64 = 0
  static let cancelToken: UInt64 = 1
  static let bufferGroup: UInt16 = 7
  static let bufferCount: UInt32 = 256
  static let bufferSize: UInt32 = 16 * 1024
  static let singleReceiveSize = 64 * 1024

  /// The opcodes the loop submits; a kernel without one gets epoll.
  private static let requiredOpcodes: [(String, Int32)] = [
    ("POLL_ADD", up_IORING_OP_POLL_ADD), ("ASYNC_CANCEL", up_IORING_OP_ASYNC_CANCEL),
    ("ACCEPT", up_IORING_OP_ACCEPT), ("CONNECT", up_IORING_OP_CONNECT), ("RECV", up_IORING_OP_RECV),
    ("SEND", up_IORING_OP_SEND), ("READ", up_IORING_OP_READ), ("RECVMSG", up_IORING_OP_RECVMSG),
    ("SENDMSG", up_IORING_OP_SENDMSG),
  ]

  init(_ configuration: EventLoop.Configuration) throws(IOError) {
    let entries = configuration.ringEntries
    // Completions are run by the loop thread when it enters the kernel,
    // not signalled to it while it runs (measured: the default interrupts
    // the loop on nearly every completion; docs/benchmarks-loop.md).
    // Best: single issuer with deferred task work, the ring enabled on the
    // loop thread (start()); else cooperative task work; else none.
    let ring = try Sys.ringCreate(
      entries: entries,
      flagChoices: [
        up_IORING_SETUP_R_DISABLED | up_IORING_SETUP_SINGLE_ISSUER | up_IORING_SETUP_DEFER_TASKRUN,
        up_IORING_SETUP_COOP_TASKRUN,
        0,
      ])
    // Every opcode the loop uses must be there (the probe the ring was
    // created with: -errno when it could not be fetched).
    for (name, opcode) in URingEngine.requiredOpcodes {
      let missing = Sys.injected(.uringProbe(opcode: name)) != nil
      let supported = missing ? 0 : up_ring_opcode_supported(ring, opcode)
      if supported != 1 {
        Sys.ringDestroy(ring)
        let why = supported < 0 ? "cannot be probed (\(errnoName(-supported)))" : "is not supported"
        throw IOError("io_uring probe: IORING_OP_\(name) \(why)", EOPNOTSUPP)
      }
    }
    // Blocking on purpose: io_uring honours O_NONBLOCK and would complete
    // the read with EAGAIN instead of waiting for a wake-up.
    do throws(IOError) {
      wake = try WakeEvent(blocking: true)
    } catch {
      Sys.ringDestroy(ring)
      throw error
    }
    self.ring = ring
    let flags = up_ring_setup_flags(ring)
    let setup =
      flags & up_IORING_SETUP_DEFER_TASKRUN != 0
      ? "single issuer, deferred task work"
      : flags & up_IORING_SETUP_COOP_TASKRUN != 0 ? "cooperative task work" : "default task work"
    // Without provided buffers, receives are single-shot (the reason is in
    // the capabilities).
    var bufferError: IOError?
    do throws(IOError) {
      bufferRing = try Sys.bufferRingCreate(
        ring, count: URingEngine.bufferCount, size: URingEngine.bufferSize, group: URingEngine.bufferGroup)
    } catch {
      bufferRing = nil
      bufferError = error
    }
    // Multishot variants are tried; a kernel that refuses one with EINVAL
    // makes the engine use the single-shot form from then on.
    multishotReceive = bufferRing != nil
    capabilityLog = Lock([
      "io_uring: \(entries) entries, features 0x\(String(up_ring_features(ring), radix: 16)), \(setup)",
      "opcodes probed: " + URingEngine.requiredOpcodes.map(\.0).joined(separator: ", "),
      "multishot poll", "multishot accept",
      bufferRing != nil
        ? "multishot recv with \(URingEngine.bufferCount) provided buffers of \(URingEngine.bufferSize) B"
        : "single-shot recv (provided buffer ring: \(errnoName(bufferError?.code ?? 0)))",
    ])
    wakeBuffer = .allocate(capacity: 1)
  }

  deinit { wakeBuffer.deallocate() }

  /// On the loop thread, before the first wait: a ring created disabled
  /// (single issuer) is enabled here so that this thread is its submitter.
  func start() throws(IOError) {
    if up_ring_setup_flags(ring) & up_IORING_SETUP_R_DISABLED != 0 {
      try Sys.ringEnable(ring)
    }
    try armWake()
  }

  /// Notes a multishot variant the kernel refused, for ``capabilities``.
  func giveUp(_ what: String) {
    capabilityLog.withLock { $0.append("\(what): multishot refused with EINVAL, single-shot from now on") }
  }

  func armWake() throws(IOError) {
    try prep { up_ring_prep_read(ring, wake.loopFD, wakeBuffer, 8, URingEngine.wakeToken) }
    wakeArmed = true
  }

  /// Queues one SQE, flushing the submission queue once if it is full.
  func prep(_ body: () -> Int32) throws(IOError) {
    if try Sys.ringPrepare(body) { return }
    pressure.submissionQueueFull += 1
    submitQueued()
    if try Sys.ringPrepare(body) { return }
    throw IOError("io_uring_get_sqe", EBUSY)
  }

  /// Submits every queued SQE now. A full completion queue (EBUSY) is
  /// emptied into `held` (handled by the next reap, in order) and the
  /// submit tried again, a few times at most; a submit that still fails
  /// leaves the SQEs queued for the next io_uring_enter, and is counted.
  private func submitQueued() {
    for _ in 0..<URingEngine.submitAttempts {
      do throws(IOError) {
        if try Sys.ringSubmit(ring) { return }
      } catch {
        pressure.submitFailures += 1
        return
      }
      pressure.completionQueueBusy += 1
      var batch = [up_cqe](repeating: up_cqe(), count: URingEngine.heldBatch)
      let n = Int(up_ring_reap(ring, &batch, UInt32(batch.count)))
      held += batch[0..<n]
    }
    pressure.submitFailures += 1
  }
  private static let submitAttempts = 4
  private static let heldBatch = 64

  /// Cancels an operation and submits at once, together with every SQE
  /// queued before it: when this returns, nothing queued for the fd still
  /// waits in the submission queue, so the caller may close the fd (a
  /// later submit could otherwise reach a file that reused the number).
  func cancel(token: UInt64) {
    guard records[token] != nil, !cancelling.contains(token) else { return }
    cancelling.insert(token)
    do throws(IOError) {
      try prep { up_ring_prep_cancel(ring, token, URingEngine.cancelToken) }
    } catch {
      cancelBacklog.append(token)
    }
    submitQueued()
  }

  func wait(timeout: Int64?, deliver: (LoopCompletion) -> Void) throws(IOError) {
    var timeout = timeout
    if !wakeArmed {
      try? armWake()
      // Never deaf: without the wake-up read, poll for tasks every ms.
      if !wakeArmed { timeout = min(timeout ?? 1_000_000, 1_000_000) }
    }
    if !cancelBacklog.isEmpty {
      let backlog = cancelBacklog
      cancelBacklog = []
      for token in backlog where records[token] != nil {
        do throws(IOError) {
          try prep { up_ring_prep_cancel(ring, token, URingEngine.cancelToken) }
        } catch {
          cancelBacklog.append(token)
        }
      }
    }
    rearmPending(deliver)
    if !refusals.isEmpty || !held.isEmpty { timeout = 0 }
    // Rounded up (no timer fires early) without overflowing near Int64.max.
    let micros = timeout.map { Int(max(0, $0 / 1000 + ($0 % 1000 > 0 ? 1 : 0))) } ?? -1
    // False: the completion queue is full (overflowing): reap, then submit again.
    while try !Sys.ringSubmitAndWait(ring, microseconds: micros) {
      pressure.completionQueueBusy += 1
      reap(deliver)
    }
    reap(deliver)
  }

  private func reap(_ deliver: (LoopCompletion) -> Void) {
    while !refusals.isEmpty {
      let made = refusals
      refusals = []
      for cqe in made { handle(cqe, deliver) }
    }
    while true {
      // Reaped by a cancel while the last batch was handled: older than
      // anything still in the completion queue.
      if !held.isEmpty {
        let batch = held
        held = []
        for cqe in batch { handle(cqe, deliver) }
        continue
      }
      let n = Int(up_ring_reap(ring, &cqes, UInt32(cqes.count)))
      if n == 0 { return }
      for i in 0..<n { handle(cqes[i], deliver) }
    }
  }

  func release(_ token: UInt64) {
    cancelling.remove(token)
    staleTokens.remove(token)
    guard let record = records.removeValue(forKey: token) else { return }
    untrack(token, record)
    switch record {
    case .send(let buffer): recycleSendBuffer(buffer)
    case .connect(_, let buffer): buffer.deallocate()
    case .receive(_, let buffer, _): buffer?.deallocate()
    case .receiveFrom(_, let message), .sendTo(let message): up_msg_free(message)
    case .poll, .accept: break
    }
  }

  /// True while the wake-up read is armed (tests).
  var wakeIsArmed: Bool { wakeArmed }

  /// SQEs queued and not yet submitted (tests).
  var queuedSubmissions: Int { Int(up_ring_sq_ready(ring)) }

  /// The wake-up eventfd's number (tests).
  var wakeNumber: Int32 { wake.loopFD }

  func wakeup() { wake.signal() }

  func pause(milliseconds: Int32) { wake.waitReadable(milliseconds: milliseconds) }

  func close() {
    // Every operation must have ended before this (the loop cancels and
    // drains them). The ring goes first, so the kernel has let go of every
    // buffer before any is freed. A connection accepted in a completion
    // held back from a full queue (submitQueued) has no owner: closed.
    for cqe in held where cqe.res >= 0 {
      if case .accept = records[cqe.user_data] { Sys.close(cqe.res) }
    }
    held = []
    Sys.ringDestroy(ring)
    Sys.bufferRingFree(bufferRing)
    bufferRing = nil
    for token in Array(records.keys) { release(token) }
    for buffer in sendPool { buffer.deallocate() }
    sendPool = []
    wake.close()
  }

  /// Operations still in flight (for shutdown and tests).
  var inFlight: Int { records.count }
}
