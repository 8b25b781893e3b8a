import CUserProtoShim
import Glibc

/// The io_uring backend (liburing). Readiness is multishot POLL_ADD;
/// accept and receive are multishot (receive selects from a ring of provided
/// buffers) where the kernel supports them; connect and send are single
/// operations whose buffers the backend owns until their completion arrives.
final class URingBackend: LoopBackend {
  let kind = EventLoop.Backend.ioUring
  private(set) var capabilities: [String] = []

  private let ring: OpaquePointer
  private let wakeFD: Int32
  private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
  private var bufferRing: OpaquePointer?
  private let multishotAccept: Bool
  private let multishotReceive: Bool
  private var cqes = [up_cqe](repeating: up_cqe(), count: 256)
  private let setupFlags: String

  /// What each in-flight operation owns, by token.
  private enum Record {
    case poll(fd: Int32, events: UInt32)
    case accept(fd: Int32)
    case connect(UnsafeMutableRawBufferPointer)
    case receive(fd: Int32, buffer: UnsafeMutableRawBufferPointer?, datagram: Bool)
    case send(UnsafeMutableRawBufferPointer)
  }
  private var records: [UInt64: Record] = [:]
  /// Tokens whose cancellation was requested; completions for them end them.
  private var cancelling: Set<UInt64> = []

  // Internal tokens never collide with the loop's (generation >= 1).
  private static let wakeToken: UInt64 = 0
  private static let cancelToken: UInt64 = 1
  private static let bufferGroup: UInt16 = 7
  static let bufferCount: UInt32 = 256
  static let bufferSize: UInt32 = 16 * 1024
  private static let singleReceiveSize = 64 * 1024

  /// Test hook: the next io_uring_enter fails with this errno (once).
  var injectedEnterError: Int32?

  init(_ configuration: EventLoop.Configuration) throws(IOError) {
    let entries = configuration.ringEntries
    if let injected = configuration.injectedSetupError { throw IOError("io_uring_setup", injected) }
    // Completions are run by the loop thread when it enters the kernel,
    // not signalled to it while it runs (measured: the default interrupts
    // the loop on nearly every completion; docs/benchmarks-loop.md).
    // Best: single issuer with deferred task work, the ring enabled on the
    // loop thread (start()); else cooperative task work; else none.
    let attempts: [UInt32] = [
      up_IORING_SETUP_R_DISABLED | up_IORING_SETUP_SINGLE_ISSUER | up_IORING_SETUP_DEFER_TASKRUN,
      up_IORING_SETUP_COOP_TASKRUN,
      0,
    ]
    var error: Int32 = 0
    var created: OpaquePointer?
    for flags in attempts {
      created = up_ring_create(entries, flags, &error)
      if created != nil || error != -EINVAL { break }
    }
    guard let ring = created else {
      throw IOError("io_uring_setup", -error)
    }
    self.ring = ring
    let flags = up_ring_setup_flags(ring)
    setupFlags =
      flags & up_IORING_SETUP_DEFER_TASKRUN != 0
      ? "single issuer, deferred task work"
      : flags & up_IORING_SETUP_COOP_TASKRUN != 0 ? "cooperative task work" : "default task work"
    // Blocking on purpose: io_uring honours O_NONBLOCK and would complete
    // the read with EAGAIN instead of waiting for a wake-up.
    let fd = up_eventfd2(0, up_EFD_CLOEXEC)
    guard fd >= 0 else {
      up_ring_destroy(ring)
      throw IOError("eventfd", -fd)
    }
    wakeFD = fd
    multishotAccept =
      up_ring_opcode_supported(ring, up_IORING_OP_ACCEPT) == 1
      && URingBackend.kernelAtLeast(5, 19)
    var bufferError: Int32 = 0
    bufferRing = up_bufring_create(
      ring, URingBackend.bufferCount, URingBackend.bufferSize, URingBackend.bufferGroup, &bufferError)
    multishotReceive = bufferRing != nil && URingBackend.kernelAtLeast(6, 0)
    capabilities = [
      "io_uring: \(entries) entries, features 0x\(String(up_ring_features(ring), radix: 16)), \(setupFlags)",
      multishotAccept ? "multishot accept" : "single-shot accept",
      multishotReceive
        ? "multishot recv with \(URingBackend.bufferCount) provided buffers of \(URingBackend.bufferSize) B"
        : "single-shot recv (provided buffer ring: \(bufferError == 0 ? "unused" : IOError.name(-bufferError)))",
    ]
    try armWake()
  }

  deinit { wakeBuffer.deallocate() }

  /// On the loop thread, before the first wait: a ring created disabled
  /// (single issuer) is enabled here so that this thread is its submitter.
  func start() throws(IOError) {
    if up_ring_setup_flags(ring) & up_IORING_SETUP_R_DISABLED != 0 {
      let rc = up_ring_enable(ring)
      if rc < 0 { throw IOError("io_uring_register(ENABLE_RINGS)", -rc) }
    }
  }

  static func kernelAtLeast(_ major: Int, _ minor: Int) -> Bool {
    var uts = utsname()
    uname(&uts)
    let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let parts = release.split(separator: ".").prefix(2).map { Int($0.prefix { $0.isNumber }) ?? 0 }
    guard parts.count == 2 else { return false }
    return (parts[0], parts[1]) >= (major, minor)
  }

  private func armWake() throws(IOError) {
    try prep { up_ring_prep_read(ring, wakeFD, wakeBuffer, 8, URingBackend.wakeToken) }
  }

  /// Queues one SQE, flushing the submission queue once if it is full.
  private func prep(_ body: () -> Int32) throws(IOError) {
    var rc = body()
    if rc == -EBUSY {
      _ = up_ring_submit(ring)
      rc = body()
    }
    if rc < 0 { throw IOError("io_uring_get_sqe", -rc) }
  }

  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError) {
    switch operation {
    case .poll(let fd, let events):
      try prep { up_ring_prep_poll_add(ring, fd, events, token, 1) }
      records[token] = .poll(fd: fd, events: events)
    case .accept(let fd):
      try prep { up_ring_prep_accept(ring, fd, multishotAccept ? 1 : 0, token) }
      records[token] = .accept(fd: fd)
    case .connect(let fd, let address):
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: address.storage.count, alignment: 8)
      buffer.copyBytes(from: address.storage)
      do {
        try prep { up_ring_prep_connect(ring, fd, buffer.baseAddress, UInt32(buffer.count), token) }
      } catch {
        buffer.deallocate()
        throw error
      }
      records[token] = .connect(buffer)
    case .receive(let fd, let datagram):
      try armReceive(fd: fd, token: token, datagram: datagram)
    case .send(let fd, let bytes):
      let buffer = sendBuffer(for: bytes.count)
      buffer.copyBytes(from: bytes)
      do {
        try prep { up_ring_prep_send(ring, fd, buffer.baseAddress, bytes.count, token) }
      } catch {
        buffer.deallocate()
        throw error
      }
      records[token] = .send(buffer)
    }
  }

  /// Streams use the multishot receive with provided buffers where the
  /// kernel has it; datagrams (which must not be cut at a provided buffer's
  /// 16 KiB) and older kernels use single receives into a 64 KiB buffer.
  private func armReceive(fd: Int32, token: UInt64, datagram: Bool) throws(IOError) {
    if multishotReceive && !datagram {
      try prep { up_ring_prep_recv_multishot(ring, fd, URingBackend.bufferGroup, token) }
      records[token] = .receive(fd: fd, buffer: nil, datagram: false)
    } else {
      let buffer: UnsafeMutableRawBufferPointer
      if case .receive(_, let existing?, _) = records[token] {
        buffer = existing
      } else {
        buffer = .allocate(byteCount: URingBackend.singleReceiveSize, alignment: 8)
      }
      records[token] = .receive(fd: fd, buffer: buffer, datagram: datagram)
      try prep { up_ring_prep_recv(ring, fd, buffer.baseAddress, buffer.count, token) }
    }
  }

  func cancel(token: UInt64) {
    guard records[token] != nil, !cancelling.contains(token) else { return }
    cancelling.insert(token)
    try? prep { up_ring_prep_cancel(ring, token, URingBackend.cancelToken) }
  }

  func wait(timeout: Int64?, deliver: (LoopCompletion) -> Void) throws(IOError) {
    let micros = timeout.map { Int(max(0, ($0 + 999) / 1000)) } ?? -1
    var rc: Int32
    if let injected = injectedEnterError {
      injectedEnterError = nil
      throw IOError("io_uring_enter", injected)
    }
    repeat {
      rc = up_ring_submit_and_wait(ring, 1, micros)
      if rc == -EBUSY || rc == -EAGAIN {
        // The completion queue is full (overflowing): reap, then submit again.
        reap(deliver)
        continue
      }
      break
    } while true
    if rc < 0 && rc != -ETIME && rc != -EINTR {
      throw IOError("io_uring_enter", -rc)
    }
    reap(deliver)
  }

  private func reap(_ deliver: (LoopCompletion) -> Void) {
    while true {
      let n = Int(up_ring_reap(ring, &cqes, UInt32(cqes.count)))
      if n == 0 { return }
      for i in 0..<n { handle(cqes[i], deliver) }
    }
  }

  private func handle(_ cqe: up_cqe, _ deliver: (LoopCompletion) -> Void) {
    let token = cqe.user_data
    if token == URingBackend.wakeToken {
      try? armWake()
      return
    }
    if token == URingBackend.cancelToken { return }
    guard let record = records[token] else { return }
    let more = cqe.flags & up_IORING_CQE_F_MORE != 0
    let res = cqe.res
    let cancelled = cancelling.contains(token)

    func finish(_ value: CompletionValue) {
      release(token)
      deliver(LoopCompletion(token: token, value: value, isFinal: true))
    }

    if res == -ECANCELED || (cancelled && res < 0) {
      finish(.failed(IOError("cancelled", ECANCELED)))
      return
    }
    switch record {
    case .poll(let fd, let events):
      if res < 0 {
        finish(.failed(IOError("poll", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .events(UInt32(res)), isFinal: false))
      if !more && !cancelled {
        // The kernel ended the multishot (e.g. CQ overflow): re-arm it.
        try? prep { up_ring_prep_poll_add(ring, fd, events, token, 1) }
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .accept(let fd):
      if res < 0 {
        finish(.failed(IOError("accept", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .accepted(res), isFinal: false))
      if !more && !cancelled {
        try? prep { up_ring_prep_accept(ring, fd, multishotAccept ? 1 : 0, token) }
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .connect:
      finish(res < 0 ? .failed(IOError("connect", -res)) : .connected)
    case .send:
      finish(res < 0 ? .failed(IOError("send", -res)) : .sent(Int(res)))
    case .receive(let fd, let buffer, let datagram):
      if res == -ENOBUFS && !cancelled {
        // Every provided buffer was in use: arm again (they are recycled
        // as soon as each completion is copied out).
        try? armReceive(fd: fd, token: token, datagram: datagram)
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
      if !more && !cancelled {
        try? armReceive(fd: fd, token: token, datagram: datagram)
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
    if count <= URingBackend.pooledSendSize, let pooled = sendPool.popLast() {
      return UnsafeMutableRawBufferPointer(rebasing: pooled[0..<max(count, 1)])
    }
    let size = count <= URingBackend.pooledSendSize ? URingBackend.pooledSendSize : count
    return UnsafeMutableRawBufferPointer(
      rebasing: UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)[0..<max(count, 1)])
  }

  private func recycleSendBuffer(_ buffer: UnsafeMutableRawBufferPointer) {
    // Buffers are carved from allocations of at least pooledSendSize.
    if buffer.count <= URingBackend.pooledSendSize && sendPool.count < URingBackend.sendPoolLimit {
      sendPool.append(UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: URingBackend.pooledSendSize))
    } else {
      buffer.deallocate()
    }
  }

  private func release(_ token: UInt64) {
    cancelling.remove(token)
    guard let record = records.removeValue(forKey: token) else { return }
    switch record {
    case .send(let buffer): recycleSendBuffer(buffer)
    case .connect(let buffer): buffer.deallocate()
    case .receive(_, let buffer, _): buffer?.deallocate()
    case .poll, .accept: break
    }
  }

  func wakeup() {
    var one: UInt64 = 1
    _ = Glibc.write(wakeFD, &one, 8)
  }

  func close() {
    // Every operation must have ended before this (the loop cancels and
    // drains them); free whatever is left regardless.
    for token in Array(records.keys) { release(token) }
    for buffer in sendPool { buffer.deallocate() }
    sendPool = []
    if let bufferRing { up_bufring_destroy(ring, bufferRing) }
    bufferRing = nil
    up_ring_destroy(ring)
    Glibc.close(wakeFD)
  }

  /// Operations still in flight (for shutdown and tests).
  var inFlight: Int { records.count }
}
