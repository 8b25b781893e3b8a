import CUserProtoShim
import Glibc
import Locking
import MaskCore

/// The io_uring engine (liburing). Readiness is multishot POLL_ADD;
/// accept and receive are multishot (receive selects from a ring of provided
/// buffers) where the kernel supports them; connect and send are single
/// operations whose buffers the engine owns until their completion arrives.
final class URingEngine: LoopEngine {
  let kind = EventLoop.Backend.ioUring
  var capabilities: [String] { capabilityLog.withLock { $0 } }
  /// Loop-confined.
  private(set) var pressure = EnginePressure()
  private let capabilityLog: Lock<[String]>

  private let ring: OpaquePointer
  private let wake: WakeEvent
  private let wakeBuffer: UnsafeMutablePointer<UInt64>
  /// False after re-arming the wake-up read failed: retried before each wait.
  private var wakeArmed = false
  private var bufferRing: OpaquePointer?
  /// Multishot variants in use; each is given up (for single-shot) when the
  /// kernel refuses it with EINVAL.
  private var multishotPoll = true
  private var multishotAccept = true
  private var multishotReceive: Bool
  private var cqes = [up_cqe](repeating: up_cqe(), count: 256)
  /// Completions made up by fault injection, delivered by the next reap.
  private var refusals: [up_cqe] = []
  /// Completions reaped to make room in a full completion queue while SQEs
  /// were submitted outside `wait` (a cancel): handled, in order, before
  /// the next ones are reaped.
  private var held: [up_cqe] = []

  /// What each in-flight operation owns, by token.
  private enum Record {
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
  private var records: [UInt64: Record] = [:]
  /// Tokens whose cancellation was requested; completions for them end them.
  private var cancelling: Set<UInt64> = []
  /// Operations to arm again at the start of the next wait (a multishot
  /// the kernel ended, or a single-shot that completed). Not re-armed while
  /// reaping: a readable fd whose watch keeps ending on an overflowing CQ
  /// would otherwise keep the loop reaping forever.
  private var rearms: [UInt64] = []
  /// Cancellations that found the submission queue full: retried in wait.
  private var cancelBacklog: [UInt64] = []

  /// The file behind an fd number when its operations were submitted.
  private struct FileID: Equatable {
    var device: UInt64
    var inode: UInt64
  }
  /// Long-lived operations (watch, accept, receive, connect) by fd number,
  /// with the file they were submitted for, to detect a number reused
  /// after a close without cancel.
  private var fileUsers: [Int32: (file: FileID, tokens: Set<UInt64>)] = [:]
  /// Operations whose fd was closed while they ran: they end with EBADF.
  private var staleTokens: Set<UInt64> = []

  // Internal tokens never collide with the loop's (generation >= 1).
  private static let wakeToken: UInt64 = 0
  private static let cancelToken: UInt64 = 1
  private static let bufferGroup: UInt16 = 7
  static let bufferCount: UInt32 = 256
  static let bufferSize: UInt32 = 16 * 1024
  private static let singleReceiveSize = 64 * 1024

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
  private func giveUp(_ what: String) {
    capabilityLog.withLock { $0.append("\(what): multishot refused with EINVAL, single-shot from now on") }
  }

  private func armWake() throws(IOError) {
    try prep { up_ring_prep_read(ring, wake.loopFD, wakeBuffer, 8, URingEngine.wakeToken) }
    wakeArmed = true
  }

  /// Queues one SQE, flushing the submission queue once if it is full.
  private func prep(_ body: () -> Int32) throws(IOError) {
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

  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError) {
    switch operation {
    case .poll(let fd, let events):
      try checkFile(fd)
      try armPoll(fd: fd, events: events, token: token)
      track(fd, token)
    case .accept(let fd):
      try checkFile(fd)
      if refusedOperation(.accept, token) {
        records[token] = .accept(fd: fd, multishot: false)
      } else {
        try armAccept(fd: fd, token: token)
      }
      track(fd, token)
    case .connect(let fd, let address):
      try checkFile(fd)
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: address.storage.count, alignment: 8)
      buffer.copyBytes(from: address.storage)
      if !refusedOperation(.connect, token) {
        do throws(IOError) {
          try prep { up_ring_prep_connect(ring, fd, buffer.baseAddress, UInt32(buffer.count), token) }
        } catch {
          buffer.deallocate()
          throw error
        }
      }
      records[token] = .connect(fd: fd, buffer: buffer)
      track(fd, token)
    case .receive(let fd, let datagram):
      try checkFile(fd)
      if refusedOperation(.receive, token) {
        // A single-shot record (a buffer of its own), so the injected errno
        // is not taken for a multishot refusal.
        records[token] = .receive(
          fd: fd, buffer: .allocate(byteCount: URingEngine.singleReceiveSize, alignment: 8), datagram: datagram)
      } else {
        try armReceive(fd: fd, token: token, datagram: datagram)
      }
      track(fd, token)
    case .send(let fd, let bytes):
      let buffer = sendBuffer(for: bytes.count)
      buffer.copyBytes(from: bytes)
      if !refusedOperation(.send, token) {
        do throws(IOError) {
          try prep { up_ring_prep_send(ring, fd, buffer.baseAddress, bytes.count, token) }
        } catch {
          recycleSendBuffer(buffer)
          throw error
        }
      }
      records[token] = .send(buffer)
    case .receiveFrom(let fd):
      try checkFile(fd)
      try armReceiveFrom(fd: fd, token: token, refusable: true)
      track(fd, token)
    case .sendTo(let fd, let bytes, let address):
      guard let message = up_msg_alloc(bytes.count) else { throw IOError("sendmsg buffer", ENOMEM) }
      bytes.withUnsafeBytes { source in
        if let base = source.baseAddress { up_msg_data(message).copyMemory(from: base, byteCount: source.count) }
      }
      address.withSockaddr { up_msg_prepare_send(message, bytes.count, $0, $1) }
      if !refusedOperation(.send, token) {
        do throws(IOError) {
          try prep { up_ring_prep_sendmsg(ring, fd, message, token) }
        } catch {
          up_msg_free(message)
          throw error
        }
      }
      records[token] = .sendTo(message: message)
    }
  }

  /// Test hook: an operation whose call has a fault injected (``LoopFaults``)
  /// is not submitted; it completes with `-errno` at the next reap, as if
  /// the kernel had refused it. An injected EINTR is consumed and the
  /// operation submitted, as a retry would.
  private func refusedOperation(_ call: LoopFaults.Call, _ token: UInt64) -> Bool {
    guard let code = Sys.injectedFailure(call) else { return false }
    refusals.append(up_cqe(user_data: token, res: -code, flags: 0))
    return true
  }

  /// The largest datagram a RECVMSG takes whole: 65,535 bytes of IPv4
  /// payload less the UDP header is the most UDP can carry.
  private static let datagramReceiveSize = 65_536

  private func armReceiveFrom(fd: Int32, token: UInt64, refusable: Bool = false) throws(IOError) {
    let message: OpaquePointer
    if case .receiveFrom(_, let existing) = records[token] {
      message = existing
    } else {
      guard let made = up_msg_alloc(URingEngine.datagramReceiveSize) else {
        throw IOError("recvmsg buffer", ENOMEM)
      }
      message = made
    }
    records[token] = .receiveFrom(fd: fd, message: message)
    up_msg_prepare_receive(message)
    if refusable && refusedOperation(.receive, token) { return }
    do throws(IOError) {
      try prep { up_ring_prep_recvmsg(ring, fd, message, token) }
    } catch {
      records[token] = nil
      up_msg_free(message)
      throw error
    }
  }

  // MARK: fd numbers reused after a close without cancel

  private func fileID(_ fd: Int32) throws(IOError) -> FileID {
    let identity = try Sys.fileIdentity(fd)
    return FileID(device: identity.device, inode: identity.inode)
  }

  /// Before a long-lived operation on `fd`: if operations are still running
  /// for another file that had this number (closed without cancelling
  /// them), they are ended with EBADF. io_uring holds its own reference to
  /// that file, so they would otherwise run on until cancelled.
  private func checkFile(_ fd: Int32) throws(IOError) {
    let file = try fileID(fd)
    guard let users = fileUsers[fd] else {
      fileUsers[fd] = (file, [])
      return
    }
    guard users.file != file else { return }
    fileUsers[fd] = (file, [])
    for token in users.tokens {
      staleTokens.insert(token)
      cancel(token: token)
    }
  }

  private func track(_ fd: Int32, _ token: UInt64) {
    fileUsers[fd]?.tokens.insert(token)
  }

  private func untrack(_ token: UInt64, _ record: Record) {
    let fd: Int32
    switch record {
    case .poll(let f, _, _), .accept(let f, _), .connect(let f, _), .receive(let f, _, _), .receiveFrom(let f, _):
      fd = f
    case .send, .sendTo: return
    }
    guard var users = fileUsers[fd], users.tokens.remove(token) != nil else { return }
    fileUsers[fd] = users.tokens.isEmpty ? nil : users
  }

  // MARK: Arming

  /// Test hook: a multishot request refused as a kernel without it would
  /// (no SQE; a completion with `-errno` and no data).
  private func refusedByInjection(_ multishot: Bool, _ token: UInt64) -> Bool {
    guard multishot, let code = Sys.injected(.uringMultishot) else { return false }
    refusals.append(up_cqe(user_data: token, res: -code, flags: 0))
    return true
  }

  private func armPoll(fd: Int32, events: UInt32, token: UInt64) throws(IOError) {
    let multishot = multishotPoll
    if !refusedByInjection(multishot, token) {
      try prep { up_ring_prep_poll_add(ring, fd, events, token, multishot ? 1 : 0) }
    }
    records[token] = .poll(fd: fd, events: events, multishot: multishot)
  }

  private func armAccept(fd: Int32, token: UInt64) throws(IOError) {
    let multishot = multishotAccept
    if !refusedByInjection(multishot, token) {
      try prep { up_ring_prep_accept(ring, fd, multishot ? 1 : 0, token) }
    }
    records[token] = .accept(fd: fd, multishot: multishot)
  }

  /// Streams use the multishot receive with provided buffers where the
  /// kernel has it; datagrams (which must not be cut at a provided buffer's
  /// 16 KiB) and older kernels use single receives into a 64 KiB buffer.
  private func armReceive(fd: Int32, token: UInt64, datagram: Bool) throws(IOError) {
    if multishotReceive && !datagram {
      // A refused submission's record had a buffer (refusedOperation).
      if case .receive(_, let unused?, _) = records[token] {
        unused.deallocate()
        records[token] = .receive(fd: fd, buffer: nil, datagram: false)
      }
      if !refusedByInjection(true, token) {
        try prep { up_ring_prep_recv_multishot(ring, fd, URingEngine.bufferGroup, token) }
      }
      records[token] = .receive(fd: fd, buffer: nil, datagram: false)
    } else {
      let buffer: UnsafeMutableRawBufferPointer
      if case .receive(_, let existing?, _) = records[token] {
        buffer = existing
      } else {
        buffer = .allocate(byteCount: URingEngine.singleReceiveSize, alignment: 8)
      }
      records[token] = .receive(fd: fd, buffer: buffer, datagram: datagram)
      do {
        // MSG_TRUNC on a stream socket would discard data: datagrams only.
        let flags = datagram ? Int32(MSG_TRUNC) : 0
        try prep { up_ring_prep_recv(ring, fd, buffer.baseAddress, buffer.count, flags, token) }
      } catch {
        records[token] = nil
        buffer.deallocate()
        throw error
      }
    }
  }

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

  /// Arms the operations queued by `handle` again; one that cannot be armed
  /// ends with the error, and one cancelled meanwhile (nothing left in the
  /// kernel to cancel) ends here.
  private func rearmPending(_ deliver: (LoopCompletion) -> Void) {
    let pending = rearms
    rearms = []
    for token in pending {
      guard let record = records[token] else { continue }
      func finish(_ error: IOError) {
        release(token)
        deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
      }
      if staleTokens.contains(token) {
        finish(IOError("fd closed while registered", EBADF))
        continue
      }
      if cancelling.contains(token) {
        finish(IOError("cancelled", ECANCELED))
        continue
      }
      do throws(IOError) {
        switch record {
        case .poll(let fd, let events, _): try armPoll(fd: fd, events: events, token: token)
        case .accept(let fd, _): try armAccept(fd: fd, token: token)
        case .receive(let fd, _, let datagram): try armReceive(fd: fd, token: token, datagram: datagram)
        case .receiveFrom(let fd, _): try armReceiveFrom(fd: fd, token: token)
        case .connect, .send, .sendTo: break
        }
      } catch {
        finish(error)
      }
    }
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

  private func handle(_ cqe: up_cqe, _ deliver: (LoopCompletion) -> Void) {
    let token = cqe.user_data
    if token == URingEngine.wakeToken {
      wakeArmed = false
      try? armWake()  // if this fails, wait() retries before blocking
      return
    }
    if token == URingEngine.cancelToken { return }
    guard let record = records[token] else { return }
    let more = cqe.flags & up_IORING_CQE_F_MORE != 0
    let res = cqe.res
    let cancelled = cancelling.contains(token)

    func finish(_ value: CompletionValue) {
      release(token)
      deliver(LoopCompletion(token: token, value: value, isFinal: true))
    }

    if staleTokens.contains(token) {
      // Its fd was closed and the number reused: drop what it produced.
      if cqe.flags & up_IORING_CQE_F_BUFFER != 0, let bufferRing {
        up_bufring_recycle(bufferRing, UInt16(truncatingIfNeeded: cqe.flags >> up_IORING_CQE_BUFFER_SHIFT))
      }
      if case .accept = record, res >= 0 { Sys.close(res) }
      if !more { finish(.failed(IOError("fd closed while registered", EBADF))) }
      return
    }
    if res == -EINVAL && record.multishot && !cancelled {
      // A kernel without this multishot variant: single-shot from now on.
      switch record {
      case .poll:
        if multishotPoll { giveUp("poll") }
        multishotPoll = false
      case .accept:
        if multishotAccept { giveUp("accept") }
        multishotAccept = false
      case .receive:
        if multishotReceive { giveUp("recv") }
        multishotReceive = false
      case .connect, .send, .receiveFrom, .sendTo: break
      }
      rearms.append(token)
      return
    }
    if res == -ECANCELED || (cancelled && res < 0) {
      finish(.failed(IOError("cancelled", ECANCELED)))
      return
    }
    switch record {
    case .poll:
      if res < 0 {
        finish(.failed(IOError("poll", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .events(UInt32(res)), isFinal: false))
      if !more && !cancelled {
        // Single-shot, or the kernel ended the multishot (CQ overflow).
        if record.multishot { pressure.multishotEnded += 1 }
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .accept:
      if res < 0 {
        finish(.failed(IOError("accept", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .accepted(res), isFinal: false))
      if !more && !cancelled {
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .connect:
      finish(res < 0 ? .failed(IOError("connect", -res)) : .connected)
    case .send:
      finish(res < 0 ? .failed(IOError("send", -res)) : .sent(Int(res)))
    case .sendTo:
      finish(res < 0 ? .failed(IOError("sendmsg", -res)) : .sent(Int(res)))
    case .receiveFrom(_, let message):
      if res == -EAGAIN || res == -EINTR {
        if !cancelled { rearms.append(token) } else { finish(.failed(IOError("cancelled", ECANCELED))) }
        return
      }
      if res < 0 {
        finish(.failed(IOError("recvmsg", -res)))
        return
      }
      // Asked with MSG_TRUNC: a cut datagram reports its real length, and
      // the msghdr's flags say so.
      if Int(res) > URingEngine.datagramReceiveSize || up_msg_flags(message) & Int32(MSG_TRUNC) != 0 {
        deliver(LoopCompletion(token: token, value: .truncated(Int(res)), isFinal: false))
        if !cancelled { rearms.append(token) } else { finish(.failed(IOError("cancelled", ECANCELED))) }
        return
      }
      var length: UInt32 = 0
      let address = up_msg_address(message, &length)
      let sender = SocketAddress(raw: UnsafeRawBufferPointer(start: address, count: Int(length)))
      let bytes = Array(UnsafeRawBufferPointer(start: up_msg_data(message), count: Int(res)))
      deliver(LoopCompletion(token: token, value: .receivedFrom(bytes, sender), isFinal: false))
      if !cancelled {
        rearms.append(token)
      } else {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .receive(_, let buffer, let datagram):
      if res == -ENOBUFS && !cancelled {
        // Every provided buffer was in use: arm again (they are recycled
        // as soon as each completion is copied out).
        rearms.append(token)
        return
      }
      if res < 0 {
        finish(.failed(IOError("recv", -res)))
        return
      }
      if res == 0 && !datagram {
        finish(.received([]))
        return
      }
      if let buffer, Int(res) > buffer.count {
        // A datagram (asked with MSG_TRUNC) longer than the buffer reports
        // its real length: it was cut.
        deliver(LoopCompletion(token: token, value: .truncated(Int(res)), isFinal: false))
      } else {
        var bytes: [UInt8]
        if let buffer {
          bytes = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(res)]))
        } else {
          let bid = UInt16(truncatingIfNeeded: cqe.flags >> up_IORING_CQE_BUFFER_SHIFT)
          let base = up_bufring_buffer(bufferRing, bid)!
          bytes = Array(UnsafeRawBufferPointer(start: base, count: Int(res)))
          up_bufring_recycle(bufferRing, bid)
        }
        deliver(LoopCompletion(token: token, value: .received(bytes), isFinal: false))
        bytes = []
      }
      if !more && !cancelled {
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    }
  }

  /// Send buffers the kernel owns until their completion: reused from a
  /// small pool, so the loop does not allocate (and fault in) a fresh
  /// buffer of up to 256 KiB for every send.
  private var sendPool: [UnsafeMutableRawBufferPointer] = []
  private static let pooledSendSize = 256 * 1024
  private static let sendPoolLimit = 32

  private func sendBuffer(for count: Int) -> UnsafeMutableRawBufferPointer {
    if count <= URingEngine.pooledSendSize, let pooled = sendPool.popLast() {
      return UnsafeMutableRawBufferPointer(rebasing: pooled[0..<max(count, 1)])
    }
    let size = count <= URingEngine.pooledSendSize ? URingEngine.pooledSendSize : count
    return UnsafeMutableRawBufferPointer(
      rebasing: UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)[0..<max(count, 1)])
  }

  private func recycleSendBuffer(_ buffer: UnsafeMutableRawBufferPointer) {
    // Buffers are carved from allocations of at least pooledSendSize.
    if buffer.count <= URingEngine.pooledSendSize && sendPool.count < URingEngine.sendPoolLimit {
      sendPool.append(UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: URingEngine.pooledSendSize))
    } else {
      buffer.deallocate()
    }
  }

  private func release(_ token: UInt64) {
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
