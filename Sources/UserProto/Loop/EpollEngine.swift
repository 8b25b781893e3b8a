import CUserProtoShim
import Glibc

/// The epoll fallback. It gives the loop the same completion semantics as
/// io_uring: each fd is registered once, edge-triggered, and operations are
/// attempted with non-blocking syscalls when their fd becomes ready.
///
/// This file holds its state, submit, cancel and the wait;
/// `EpollEngine+Registration.swift` keeps one epoll entry per fd, and
/// `EpollEngine+Attempts.swift` makes the system calls that complete the
/// operations.
final class EpollEngine: LoopEngine {
  let kind = EventLoop.Backend.epoll
  let capabilities: [String]
  var pressure: EnginePressure { EnginePressure() }

  let epfd: Int32
  private let wake: WakeEvent
  private static let wakeKey: UInt64 = .max

  /// Everything pending on one fd. The epoll key is the entry's serial, so
  /// a reused fd number never reaches a stale entry.
  final class Entry {
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

  var entries: [Int32: Entry] = [:]
  /// The entry each live operation belongs to, so cancelling is O(1).
  var owners: [UInt64: Entry] = [:]
  var bySerial: [UInt64: Entry] = [:]
  var nextSerial: UInt64 = 1
  /// Entries to attempt before blocking (new operations).
  private var attempts: [(entry: Entry, read: Bool, write: Bool)] = []
  /// Completions produced outside `wait` (cancellations), delivered next.
  var queued: [LoopCompletion] = []
  private var events = [epoll_event](repeating: epoll_event(), count: 256)
  /// False once epoll_pwait2 was refused (ENOSYS, EPERM): epoll_wait then.
  private var waitsWithPwait2 = true
  var receiveBuffer = [UInt8](repeating: 0, count: 64 * 1024)

  init() throws(IOError) {
    let ep = try Sys.epollCreate()
    let wake: WakeEvent
    do throws(IOError) {
      wake = try WakeEvent(blocking: false)
    } catch {
      Sys.close(ep)
      throw error
    }
    var event = epoll_event()
    event.events = EPOLLIN.rawValue
    event.data.u64 = EpollEngine.wakeKey
    do throws(IOError) {
      // A new epoll set holds nothing: EEXIST cannot come back here.
      guard try Sys.epollAdd(ep, wake.loopFD, &event) else { throw IOError("epoll_ctl(ADD)", EEXIST) }
    } catch {
      Sys.close(ep)
      wake.close()
      throw error
    }
    epfd = ep
    self.wake = wake
    capabilities = ["epoll: edge-triggered, operations emulated with non-blocking syscalls"]
  }

  func start() throws(IOError) {}

  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError) {
    switch operation {
    case .poll(let fd, let wanted):
      let entry = try entry(for: fd)
      // The current readiness, reported once, as POLL_ADD does when armed.
      let revents: Int16
      do throws(IOError) {
        revents = try Sys.poll(fd, events: Int16(truncatingIfNeeded: wanted), milliseconds: 0)
      } catch {
        retireIfIdle(entry)
        throw error
      }
      entry.pollTokens.append((token, wanted))
      owners[token] = entry
      let ready = UInt32(UInt16(bitPattern: revents)) & (wanted | UInt32(POLLERR | POLLHUP))
      if ready != 0 { queued.append(LoopCompletion(token: token, value: .events(ready), isFinal: false)) }
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
    // Completions delivered before the wait ran handlers that may have
    // scheduled a timer or queued a task the loop's `timeout` does not
    // know of: then the wait only polls, and the loop recomputes its
    // deadline (an accept failing at once used to leave its retry timer
    // unfired until something else woke the loop).
    var delivered = false
    let counting = { (completion: LoopCompletion) in
      delivered = true
      deliver(completion)
    }
    flushQueued(counting)
    var pending = attempts
    attempts = []
    for (entry, read, write) in pending where entries[entry.fd] === entry {
      attempt(entry, readable: read, writable: write, drain: true, counting)
    }
    pending = []
    let hasWork = delivered || !queued.isEmpty || !attempts.isEmpty
    var limit: timespec? = nil
    if hasWork {
      limit = timespec(tv_sec: 0, tv_nsec: 0)
    } else if let timeout {
      limit = timespec(tv_sec: Int(timeout / 1_000_000_000), tv_nsec: Int(timeout % 1_000_000_000))
    }
    // A signal (EINTR) is 0 events: the loop recomputes its timeout.
    var n = 0
    if waitsWithPwait2 {
      do throws(IOError) {
        n = try Sys.epollWait2(epfd, &events, timeout: limit)
      } catch let error where error.code == ENOSYS || error.code == EPERM {
        // A kernel before 5.11, or a seccomp filter that allows epoll_wait
        // but not epoll_pwait2 (the sandboxes where this fallback runs):
        // millisecond timeouts from now on, rounded up so no timer fires early.
        waitsWithPwait2 = false
      }
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
      n = try Sys.epollWait(epfd, &events, milliseconds: milliseconds)
    }
    for i in 0..<n {
      let key = events[i].data.u64
      let flags = events[i].events
      if key == EpollEngine.wakeKey {
        try Sys.drainEvent(wake.loopFD)
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

  /// The wake-up eventfd's number (tests).
  var wakeNumber: Int32 { wake.loopFD }

  func wakeup() { wake.signal() }

  func pause(milliseconds: Int32) { wake.waitReadable(milliseconds: milliseconds) }

  func close() {
    Sys.close(epfd)
    wake.close()
  }
}
