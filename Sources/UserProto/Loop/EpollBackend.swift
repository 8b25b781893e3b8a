import CUserProtoShim
import Glibc

/// The epoll fallback. It gives the loop the same completion semantics as
/// io_uring: each fd is registered once, edge-triggered, and operations are
/// attempted with non-blocking syscalls when their fd becomes ready.
final class EpollBackend: LoopBackend {
  let kind = EventLoop.Backend.epoll
  let capabilities: [String]
  var pressure: EnginePressure { EnginePressure() }

  private let epfd: Int32
  private let wake: WakeEvent
  private let faults: LoopFaults?
  private static let wakeKey: UInt64 = .max

  /// Everything pending on one fd. The epoll key is the entry's serial, so
  /// a reused fd number never reaches a stale entry.
  private final class Entry {
    let fd: Int32
    let serial: UInt64
    var pollTokens: [(UInt64, UInt32)] = []
    var acceptToken: UInt64?
    var receiveToken: UInt64?
    /// Datagram receives: an empty read is an empty datagram, not the end.
    var datagram = false
    /// Receives report the sender's address (recvfrom).
    var withAddress = false
    var connect: (token: UInt64, address: SocketAddress, started: Bool)?
    var sends: [(token: UInt64, bytes: [UInt8], address: SocketAddress?)] = []
    init(fd: Int32, serial: UInt64) {
      self.fd = fd
      self.serial = serial
    }
    var isIdle: Bool {
      pollTokens.isEmpty && acceptToken == nil && receiveToken == nil && connect == nil && sends.isEmpty
    }
  }

  private var entries: [Int32: Entry] = [:]
  /// The entry each live operation belongs to, so cancelling is O(1).
  private var owners: [UInt64: Entry] = [:]
  private var bySerial: [UInt64: Entry] = [:]
  private var nextSerial: UInt64 = 1
  /// Entries to attempt before blocking (new operations).
  private var attempts: [(entry: Entry, read: Bool, write: Bool)] = []
  /// Completions produced outside `wait` (cancellations), delivered next.
  private var queued: [LoopCompletion] = []
  private var events = [epoll_event](repeating: epoll_event(), count: 256)
  /// False once epoll_pwait2 was refused (ENOSYS, EPERM): epoll_wait then.
  private var waitsWithPwait2 = true
  private var receiveBuffer = [UInt8](repeating: 0, count: 64 * 1024)

  init(faults: LoopFaults? = nil) throws(IOError) {
    self.faults = faults
    let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
    guard ep >= 0 else { throw IOError("epoll_create1", errno) }
    let wake: WakeEvent
    do {
      wake = try WakeEvent(blocking: false)
    } catch {
      Glibc.close(ep)
      throw error
    }
    var event = epoll_event()
    event.events = EPOLLIN.rawValue
    event.data.u64 = EpollBackend.wakeKey
    guard epoll_ctl(ep, EPOLL_CTL_ADD, wake.loopFD, &event) == 0 else {
      let code = errno
      Glibc.close(ep)
      wake.close()
      throw IOError("epoll_ctl", code)
    }
    epfd = ep
    self.wake = wake
    capabilities = ["epoll: edge-triggered, operations emulated with non-blocking syscalls"]
  }

  /// epoll_ctl(2), or the fault injected for it. Returns 0 or an errno.
  private func control(_ op: Int32, _ fd: Int32, _ event: inout epoll_event) -> Int32 {
    if let injected = faults.take(.epollCtl) { return injected }
    return epoll_ctl(epfd, op, fd, &event) == 0 ? 0 : errno
  }

  func start() throws(IOError) {}

  /// The entry of `fd`, registering it when new.
  ///
  /// An existing entry is verified first: epoll keys a registration by the
  /// file and the number, so if the fd was closed while registered and its
  /// number reused by another file, ADD succeeds (the new file was not in
  /// the set) where the same file gives EEXIST. The stale entry's operations
  /// then end with EBADF, and the new file gets a fresh entry.
  private func entry(for fd: Int32) throws(IOError) -> Entry {
    let entry = Entry(fd: fd, serial: nextSerial)
    var event = epoll_event()
    event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLPRI.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
    event.data.u64 = entry.serial
    var code = control(EPOLL_CTL_ADD, fd, &event)
    if let existing = entries[fd] {
      if code == EEXIST { return existing }
      // Only a successful ADD proves the entry's file is gone.
      guard code == 0 else { throw IOError("epoll_ctl(ADD)", code) }
      retireStale(existing)
    } else if code == EEXIST {
      // Registered by an entry whose removal failed: take it over.
      code = control(EPOLL_CTL_MOD, fd, &event)
    }
    guard code == 0 else { throw IOError("epoll_ctl(ADD)", code) }
    nextSerial += 1
    entries[fd] = entry
    bySerial[entry.serial] = entry
    return entry
  }

  /// Ends every operation of an entry whose fd was closed while registered.
  private func retireStale(_ entry: Entry) {
    let error = IOError("fd closed while registered", EBADF)
    var tokens = entry.pollTokens.map(\.0)
    tokens += [entry.acceptToken, entry.receiveToken, entry.connect?.token].compactMap { $0 }
    tokens += entry.sends.map(\.token)
    for token in tokens {
      owners[token] = nil
      queued.append(LoopCompletion(token: token, value: .failed(error), isFinal: true))
    }
    entry.pollTokens = []
    entry.acceptToken = nil
    entry.receiveToken = nil
    entry.connect = nil
    entry.sends = []
    // Its registration went with the old file (or, if the file lives on in
    // another process or fd, its events carry a serial nobody looks up).
    if entries[entry.fd] === entry { entries[entry.fd] = nil }
    bySerial[entry.serial] = nil
  }

  private func retireIfIdle(_ entry: Entry) {
    guard entry.isIdle, entries[entry.fd] === entry else { return }
    var unused = epoll_event()
    _ = control(EPOLL_CTL_DEL, entry.fd, &unused)
    entries[entry.fd] = nil
    bySerial[entry.serial] = nil
  }

  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError) {
    switch operation {
    case .poll(let fd, let wanted):
      let entry = try entry(for: fd)
      entry.pollTokens.append((token, wanted))
      owners[token] = entry
      // Report the current readiness once, as POLL_ADD does when armed.
      var probe = pollfd(fd: fd, events: Int16(truncatingIfNeeded: wanted), revents: 0)
      if Glibc.poll(&probe, 1, 0) > 0 {
        let ready = UInt32(UInt16(bitPattern: probe.revents)) & (wanted | UInt32(POLLERR | POLLHUP))
        if ready != 0 { queued.append(LoopCompletion(token: token, value: .events(ready), isFinal: false)) }
      }
    case .accept(let fd):
      let entry = try entry(for: fd)
      entry.acceptToken = token
      owners[token] = entry
      attempts.append((entry, true, false))
    case .connect(let fd, let address):
      let entry = try entry(for: fd)
      entry.connect = (token, address, false)
      owners[token] = entry
      attempts.append((entry, false, true))
    case .receive(let fd, let datagram):
      let entry = try entry(for: fd)
      entry.receiveToken = token
      entry.datagram = datagram
      owners[token] = entry
      attempts.append((entry, true, false))
    case .receiveFrom(let fd):
      let entry = try entry(for: fd)
      entry.receiveToken = token
      entry.datagram = true
      entry.withAddress = true
      owners[token] = entry
      attempts.append((entry, true, false))
    case .send(let fd, let bytes):
      try queueSend(fd: fd, bytes: bytes, address: nil, token: token)
    case .sendTo(let fd, let bytes, let address):
      try queueSend(fd: fd, bytes: bytes, address: address, token: token)
    }
  }

  private func queueSend(fd: Int32, bytes: [UInt8], address: SocketAddress?, token: UInt64) throws(IOError) {
    // Sends skip the closed-while-registered check (one epoll_ctl per
    // send, on the hot path), as io_uring's sends do: the fd's watch or
    // receive, which every connection has, already made that check.
    let entry: Entry
    if let existing = entries[fd] { entry = existing } else { entry = try self.entry(for: fd) }
    entry.sends.append((token, bytes, address))
    owners[token] = entry
    // Only the new output is tried: a speculative read here would cost a
    // recv returning EAGAIN after every send.
    attempts.append((entry, false, true))
  }

  func cancel(token: UInt64) {
    let cancelled = LoopCompletion(token: token, value: .failed(IOError("cancelled", ECANCELED)), isFinal: true)
    if let entry = owners.removeValue(forKey: token) {
      var found = false
      if let index = entry.pollTokens.firstIndex(where: { $0.0 == token }) {
        entry.pollTokens.remove(at: index)
        found = true
      } else if entry.acceptToken == token {
        entry.acceptToken = nil
        found = true
      } else if entry.receiveToken == token {
        entry.receiveToken = nil
        found = true
      } else if entry.connect?.token == token {
        entry.connect = nil
        found = true
      } else if let index = entry.sends.firstIndex(where: { $0.token == token }) {
        entry.sends.remove(at: index)
        found = true
      }
      if found {
        queued.append(cancelled)
        // Sends queued before the cancel are tried now, not in the next
        // wait: the caller may close the fd as soon as this returns.
        if !entry.sends.isEmpty && entry.connect == nil && entries[entry.fd] === entry {
          attempt(entry, readable: false, writable: true, drain: false) { completion in
            if completion.isFinal { owners[completion.token] = nil }
            queued.append(completion)
          }
        }
        retireIfIdle(entry)
      }
    }
  }

  func wait(timeout: Int64?, deliver: (LoopCompletion) -> Void) throws(IOError) {
    // Every completion passes here: a final one ends its operation.
    try waitDelivering(timeout: timeout) { completion in
      if completion.isFinal { owners[completion.token] = nil }
      deliver(completion)
    }
  }

  private func waitDelivering(timeout: Int64?, deliver: (LoopCompletion) -> Void) throws(IOError) {
    flushQueued(deliver)
    var pending = attempts
    attempts = []
    for (entry, read, write) in pending where entries[entry.fd] === entry {
      attempt(entry, readable: read, writable: write, drain: true, deliver)
    }
    pending = []
    let hasWork = !queued.isEmpty || !attempts.isEmpty
    var spec = timespec()
    if hasWork {
      spec = timespec(tv_sec: 0, tv_nsec: 0)
    } else if let timeout {
      spec = timespec(tv_sec: Int(timeout / 1_000_000_000), tv_nsec: Int(timeout % 1_000_000_000))
    }
    var n: Int32 = -1
    if waitsWithPwait2 {
      n = withUnsafePointer(to: &spec) { p -> Int32 in
        if let injected = faults.take(.epollWait) {
          errno = injected
          return -1
        }
        let limit: UnsafePointer<timespec>? = (hasWork || timeout != nil) ? p : nil
        return epoll_pwait2(epfd, &events, Int32(events.count), limit, nil)
      }
      // A kernel before 5.11, or a seccomp filter that allows epoll_wait
      // but not epoll_pwait2 (the sandboxes where this fallback runs):
      // millisecond timeouts from now on, rounded up so no timer fires early.
      if n < 0 && (errno == ENOSYS || errno == EPERM) { waitsWithPwait2 = false }
    }
    if !waitsWithPwait2 {
      let milliseconds: Int32
      if hasWork {
        milliseconds = 0
      } else if let timeout {
        milliseconds = Int32(clamping: timeout / 1_000_000 + (timeout % 1_000_000 == 0 ? 0 : 1))
      } else {
        milliseconds = -1
      }
      n = epoll_wait(epfd, &events, Int32(events.count), milliseconds)
    }
    if n < 0 {
      let code = errno
      if code == EINTR { return }
      throw IOError(waitsWithPwait2 ? "epoll_pwait2" : "epoll_wait", code)
    }
    for i in 0..<Int(n) {
      let key = events[i].data.u64
      let flags = events[i].events
      if key == EpollBackend.wakeKey {
        var value: UInt64 = 0
        _ = Glibc.read(wake.loopFD, &value, 8)
        continue
      }
      guard let entry = bySerial[key] else { continue }  // stale: its fd was retired
      for (token, wanted) in entry.pollTokens {
        let ready = flags & (wanted | EPOLLERR.rawValue | EPOLLHUP.rawValue)
        if ready != 0 { deliver(LoopCompletion(token: token, value: .events(ready), isFinal: false)) }
      }
      let problem = flags & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
      attempt(
        entry,
        readable: problem || flags & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue) != 0,
        writable: problem || flags & EPOLLOUT.rawValue != 0,
        drain: problem || flags & EPOLLRDHUP.rawValue != 0, deliver)
    }
    flushQueued(deliver)
  }

  private func flushQueued(_ deliver: (LoopCompletion) -> Void) {
    while !queued.isEmpty {
      let batch = queued
      queued = []
      for completion in batch { deliver(completion) }
    }
  }

  /// Runs every operation of `entry` that readiness allows, until EAGAIN.
  /// A stream read shorter than the buffer means the socket was drained
  /// (edge-triggered: new data brings a new event), which saves the read
  /// that would return EAGAIN; with `drain` (the peer is closing, or the
  /// state is unknown) reading goes on until EAGAIN or end-of-stream.
  private func attempt(
    _ entry: Entry, readable: Bool, writable: Bool, drain: Bool, _ deliver: (LoopCompletion) -> Void
  ) {
    let fd = entry.fd
    // Output first: bytes queued before a failure (a protocol header)
    // still leave, as they would with io_uring's in-order submission.
    if writable || entry.connect?.started == false, let pending = entry.connect {
      if !pending.started {
        entry.connect?.started = true
        let rc = pending.address.withSockaddr { Glibc.connect(fd, $0, $1) }
        let code = errno
        if rc == 0 {
          entry.connect = nil
          deliver(LoopCompletion(token: pending.token, value: .connected, isFinal: true))
        } else if code != EINPROGRESS && code != EINTR && code != EAGAIN {
          entry.connect = nil
          deliver(LoopCompletion(token: pending.token, value: .failed(IOError("connect", code)), isFinal: true))
        }
      } else if writable {
        var error: Int32 = 0
        var length = socklen_t(4)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        entry.connect = nil
        deliver(
          LoopCompletion(
            token: pending.token, value: error == 0 ? .connected : .failed(IOError("connect", error)), isFinal: true))
      }
    }
    if writable {
      while let first = entry.sends.first {
        let flags = Int32(MSG_DONTWAIT | MSG_NOSIGNAL)
        let n = first.bytes.withUnsafeBytes { bytes in
          if let address = first.address {
            address.withSockaddr { sendto(fd, bytes.baseAddress, bytes.count, flags, $0, $1) }
          } else {
            send(fd, bytes.baseAddress, bytes.count, flags)
          }
        }
        let code = errno
        if n < 0 && code == EINTR { continue }
        if n < 0 && code == EAGAIN { break }
        entry.sends.removeFirst()
        deliver(
          LoopCompletion(token: first.token, value: n >= 0 ? .sent(n) : .failed(IOError("send", code)), isFinal: true))
      }
    }
    if readable, let token = entry.acceptToken {
      while entry.acceptToken == token {
        let client = up_accept(fd)
        if client >= 0 {
          deliver(LoopCompletion(token: token, value: .accepted(client), isFinal: false))
          continue
        }
        let code = -client
        if code == EINTR || code == ECONNABORTED { continue }
        if code == EAGAIN { break }
        entry.acceptToken = nil
        deliver(LoopCompletion(token: token, value: .failed(IOError("accept", code)), isFinal: true))
      }
    }
    if readable, let token = entry.receiveToken, entry.withAddress {
      receiveDatagrams(entry, token, deliver)
    } else if readable, let token = entry.receiveToken {
      // A datagram is asked with MSG_TRUNC, so one longer than the buffer
      // reports its real length (on a stream MSG_TRUNC would discard data).
      let flags = Int32(MSG_DONTWAIT) | (entry.datagram ? Int32(MSG_TRUNC) : 0)
      while entry.receiveToken == token {
        let n = receiveBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, flags) }
        if entry.datagram && n > receiveBuffer.count {
          deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
          continue
        }
        if n > 0 || (n == 0 && entry.datagram) {
          deliver(LoopCompletion(token: token, value: .received(Array(receiveBuffer[0..<n])), isFinal: false))
          if !drain && !entry.datagram && n < receiveBuffer.count { break }
          continue
        }
        let code = errno
        if n < 0 && code == EINTR { continue }
        if n < 0 && code == EAGAIN { break }
        entry.receiveToken = nil
        deliver(
          LoopCompletion(token: token, value: n == 0 ? .received([]) : .failed(IOError("recv", code)), isFinal: true))
      }
    }
    retireIfIdle(entry)
  }

  /// Datagrams with their senders (an unconnected UDP socket), until EAGAIN.
  private func receiveDatagrams(_ entry: Entry, _ token: UInt64, _ deliver: (LoopCompletion) -> Void) {
    var from = sockaddr_storage()
    while entry.receiveToken == token {
      var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
      let n = receiveBuffer.withUnsafeMutableBytes { buffer in
        withUnsafeMutablePointer(to: &from) {
          $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            recvfrom(entry.fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_TRUNC), $0, &length)
          }
        }
      }
      if n > receiveBuffer.count {
        // MSG_TRUNC: a datagram longer than the buffer reports its real length.
        deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
        continue
      }
      if n >= 0 {
        let sender = withUnsafeBytes(of: &from) {
          SocketAddress(raw: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)]))
        }
        deliver(
          LoopCompletion(token: token, value: .receivedFrom(Array(receiveBuffer[0..<n]), sender), isFinal: false))
        continue
      }
      let code = errno
      if code == EINTR { continue }
      if code == EAGAIN { break }
      entry.receiveToken = nil
      deliver(LoopCompletion(token: token, value: .failed(IOError("recvfrom", code)), isFinal: true))
    }
  }

  /// The wake-up eventfd's number (tests).
  var wakeNumber: Int32 { wake.loopFD }

  func wakeup() { wake.signal() }

  func pause(milliseconds: Int32) { wake.waitReadable(milliseconds: milliseconds) }

  func close() {
    Glibc.close(epfd)
    wake.close()
  }
}
