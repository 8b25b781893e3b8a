import CUserProtoShim
import Glibc

/// The epoll fallback. It gives the loop the same completion semantics as
/// io_uring: each fd is registered once, edge-triggered, and operations are
/// attempted with non-blocking syscalls when their fd becomes ready.
final class EpollEngine: LoopEngine {
  let kind = EventLoop.Backend.epoll
  let capabilities: [String]
  var pressure: EnginePressure { EnginePressure() }

  private let epfd: Int32
  private let wake: WakeEvent
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
    // EEXIST (false) means this file is registered under the number.
    let added = try Sys.epollAdd(epfd, fd, &event)
    if let existing = entries[fd] {
      if !added { return existing }
      // Only a successful ADD proves the entry's file is gone.
      retireStale(existing)
    } else if !added {
      // Registered by an entry whose removal failed: take it over.
      try Sys.epollModify(epfd, fd, &event)
    }
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
    do throws(IOError) {
      try Sys.epollDelete(epfd, entry.fd)
    } catch {
      // The fd was closed while registered (EBADF, ENOENT: the registration
      // went with its file), or the removal failed: a later ADD of the
      // number finds EEXIST and takes the registration over (entry(for:)).
    }
    entries[entry.fd] = nil
    bySerial[entry.serial] = nil
  }

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
        do throws(IOError) {
          // False: in progress; writability brings its end.
          if try Sys.connect(fd, to: pending.address) {
            entry.connect = nil
            deliver(LoopCompletion(token: pending.token, value: .connected, isFinal: true))
          }
        } catch {
          entry.connect = nil
          deliver(LoopCompletion(token: pending.token, value: .failed(error), isFinal: true))
        }
      } else if writable {
        entry.connect = nil
        let value: CompletionValue
        do throws(IOError) {
          let code = try Sys.pendingError(fd)
          value = code == 0 ? .connected : .failed(IOError("connect", code))
        } catch {
          value = .failed(error)
        }
        deliver(LoopCompletion(token: pending.token, value: value, isFinal: true))
      }
    }
    if writable {
      while let first = entry.sends.first {
        let value: CompletionValue
        do throws(IOError) {
          // nil: the socket's buffer is full; writability brings the rest.
          guard let n = try Sys.send(fd, first.bytes, to: first.address) else { break }
          value = .sent(n)
        } catch {
          value = .failed(error)
        }
        entry.sends.removeFirst()
        deliver(LoopCompletion(token: first.token, value: value, isFinal: true))
      }
    }
    if readable, let token = entry.acceptToken {
      while entry.acceptToken == token {
        do throws(IOError) {
          // nil: no connection pending.
          guard let client = try Sys.accept(fd) else { break }
          deliver(LoopCompletion(token: token, value: .accepted(client), isFinal: false))
        } catch {
          entry.acceptToken = nil
          deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
        }
      }
    }
    if readable, let token = entry.receiveToken, entry.withAddress {
      receiveDatagrams(entry, token, deliver)
    } else if readable, let token = entry.receiveToken {
      // A datagram is asked with MSG_TRUNC, so one longer than the buffer
      // reports its real length (on a stream MSG_TRUNC would discard data).
      let flags = entry.datagram ? Int32(MSG_TRUNC) : 0
      while entry.receiveToken == token {
        let received: Int?
        do throws(IOError) {
          received = try Sys.receive(fd, into: &receiveBuffer, flags: flags)
        } catch {
          entry.receiveToken = nil
          deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
          break
        }
        // nil: nothing pending; readability brings more.
        guard let n = received else { break }
        if entry.datagram && n > receiveBuffer.count {
          deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
          continue
        }
        if n > 0 || entry.datagram {
          deliver(LoopCompletion(token: token, value: .received(Array(receiveBuffer[0..<n])), isFinal: false))
          if !drain && !entry.datagram && n < receiveBuffer.count { break }
          continue
        }
        // End of stream.
        entry.receiveToken = nil
        deliver(LoopCompletion(token: token, value: .received([]), isFinal: true))
      }
    }
    retireIfIdle(entry)
  }

  /// Datagrams with their senders (an unconnected UDP socket), until EAGAIN.
  private func receiveDatagrams(_ entry: Entry, _ token: UInt64, _ deliver: (LoopCompletion) -> Void) {
    while entry.receiveToken == token {
      let received: (length: Int, sender: SocketAddress)?
      do throws(IOError) {
        received = try Sys.receiveDatagram(entry.fd, into: &receiveBuffer)
      } catch {
        entry.receiveToken = nil
        deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
        return
      }
      // nil: nothing pending; readability brings more.
      guard let datagram = received else { return }
      let n = datagram.length
      if n > receiveBuffer.count {
        // MSG_TRUNC: a datagram longer than the buffer reports its real length.
        deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
        continue
      }
      deliver(
        LoopCompletion(token: token, value: .receivedFrom(Array(receiveBuffer[0..<n]), datagram.sender), isFinal: false)
      )
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
