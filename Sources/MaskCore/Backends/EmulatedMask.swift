import Glibc
import Synchronization

/// The stock-kernel backend: AF_UNIX datagram sockets driven into the wanted
/// poll state. See docs/maskcore.md for the measurements behind it.
///
/// - `a` is the fd users poll. Its peer is `b`; `b`'s peer is `a`, so no
///   other socket can send to either.
/// - POLLIN: `b` sends one datagram to `a`; receiving it on `a` clears it.
/// - POLLOUT: one datagram from `a` stays parked (in `b`'s queue for `.pair`,
///   in the unread `c` for `.full`), charging `a`'s send buffer; toggling
///   `a`'s SO_SNDBUF between its minimum and 128 KiB flips writability with
///   one syscall and wakes writers.
/// - POLLERR: `b` disconnecting while its own queue holds a datagram sets
///   ECONNRESET on `a` (the kernel purges `b`'s queue, so `b` re-primes it
///   while unconnected, then reconnects). SO_ERROR on `a` clears it. `a` and
///   `b` get (abstract, autobound) names only when POLLERR is first set:
///   `b` needs them to send to itself and to reconnect to `a`. Creating a
///   mask therefore binds no name on `.pair`, and one (`c`'s) on `.full`.
/// - POLLPRI: SO_SELECT_ERR_QUEUE on `a` makes a pending error also POLLPRI.
/// - POLLHUP: shutdown(SHUT_RDWR) on `a`; brings POLLIN; terminal.
/// - data: the seconds of `a`'s SO_SNDTIMEO (low half) and SO_RCVTIMEO
///   (high half), so any process holding the fd can read it back.
struct EmulatedMask {
  let layout: EmulationLayout
  let a: Int32
  let b: Int32
  let c: Int32
  private var aAddress: UnixAddress?
  private var bAddress: UnixAddress?
  private let cAddress: UnixAddress?

  // The physical state, from which the visible events derive.
  private var inQueued = false
  private var sendBufferHigh = false
  private var parked = false
  private var errorPending = false
  private var selectErrorQueue = false
  private var shut = false
  private var dataLow: UInt32 = 0
  private var dataHigh: UInt32 = 0

  /// Payload size of the parked datagram: its skb's truesize times four
  /// exceeds the minimum SO_SNDBUF (4608) and stays below 128 KiB.
  static let parkedBytes = 1024
  private static let highSendBuffer: Int32 = 65536  // the kernel doubles it

  /// The first mask fd in a process checks that the mechanisms behave as
  /// measured on this kernel; later ones trust that result.
  private static let selfChecked = Atomic<Bool>(false)

  init(layout: EmulationLayout, options: MaskFD.Options) throws(MaskError) {
    self.layout = layout
    var created: [Int32] = []
    do {
      let (first, second) = try Sys.unixDatagramPair()
      created = [first, second]
      a = first
      b = second
      if layout == .full {
        c = try Sys.unixDatagramSocket(closeOnExec: true)
        created.append(c)
        cAddress = try Sys.autobind(c)
      } else {
        c = -1
        cAddress = nil
      }
      if !options.contains(.closeOnExec) { try Sys.setCloseOnExec(a, false) }
      if !options.contains(.nonBlocking) { try Sys.setNonBlocking(a, false) }
      aAddress = nil
      bAddress = nil
      try Sys.setSocketOption(a, SO_SNDBUF, 0)
      try park()
      if !EmulatedMask.selfChecked.load(ordering: .relaxed) {
        try selfCheck()
        EmulatedMask.selfChecked.store(true, ordering: .relaxed)
      }
    } catch {
      for fd in created { Sys.close(fd) }
      throw error
    }
  }

  var descriptor: Int32 { a }

  /// The events the physical state shows.
  var visible: MaskEvents {
    var events: MaskEvents = []
    if inQueued || shut { events.insert(.readable) }
    if !parked || sendBufferHigh { events.insert(.writable) }
    if errorPending {
      events.insert(.error)
      if selectErrorQueue { events.insert(.priority) }
    }
    if shut { events.insert(.hangup) }
    return events
  }

  /// Moves to `target`, clearing bits first and setting bits after, so the
  /// intermediate states a concurrent poller can see are subsets of the old
  /// or new state. The caller has checked that the layout supports `target`.
  mutating func apply(_ target: MaskState) throws(MaskError) {
    let wanted = target.events
    // Data first: a consumer that sees the new events then reads the new
    // data (the events and the data are separate kernel objects here). If an
    // event change then fails, the old data is put back.
    let oldData = UInt64(dataHigh) << 32 | UInt64(dataLow)
    try setData(target.data)
    do {
      try applyEvents(wanted)
    } catch {
      try? setData(oldData)
      throw error
    }
  }

  private mutating func applyEvents(_ wanted: MaskEvents) throws(MaskError) {
    var raiseAgain = false
    // Name the sockets before changing anything, so a failure here (EMFILE
    // is impossible, but the abstract namespace can run out) changes nothing.
    if wanted.contains(.error) { _ = try errorPathNames() }

    // Phase 1: bits off.
    if errorPending && !wanted.contains(.error) {
      _ = try Sys.socketOption(a, SO_ERROR)
      errorPending = false
    }
    if selectErrorQueue && !wanted.contains(.priority) {
      try Sys.setSocketOption(a, SO_SELECT_ERR_QUEUE, 0)
      selectErrorQueue = false
    }
    if inQueued && !wanted.contains(.readable) {
      // A pending error makes recv return it first and clears it; it is
      // raised again below (one extra POLLERR edge, documented).
      if errorPending { raiseAgain = true }
      try drainReadable()
    }
    if visible.contains(.writable) && !wanted.contains(.writable) {
      if !parked {
        // Only `.pair` after a POLLERR: park again behind a high buffer so
        // POLLOUT stays visible until the buffer drops.
        if !sendBufferHigh { try setSendBuffer(high: true) }
        try park()
      }
      try setSendBuffer(high: false)
    }

    // Phase 2: bits on.
    if wanted.contains(.writable) && !visible.contains(.writable) {
      try setSendBuffer(high: true)
    }
    if wanted.contains(.readable) && !inQueued && !shut && !wanted.contains(.hangup) {
      try Sys.sendDatagram(b, count: 0)
      inQueued = true
    }
    if wanted.contains(.hangup) && !shut {
      try Sys.shutdownBoth(a)
      shut = true
    }
    if wanted.contains(.priority) && !selectErrorQueue {
      try Sys.setSocketOption(a, SO_SELECT_ERR_QUEUE, 1)
      selectErrorQueue = true
      // Setting the flag wakes nobody: raise the error again for an edge.
      raiseAgain = raiseAgain || errorPending
    }
    if wanted.contains(.error) && (!errorPending || raiseAgain) {
      try raiseError()
    }
  }

  /// Wakes every waiter again without changing the state, so edge-triggered
  /// consumers see a new edge for each set bit.
  mutating func resignal() throws(MaskError) {
    let events = visible
    if events.isEmpty { return }
    if errorPending {
      // POLLERR is in every epoll interest set, so its wake reaches everyone.
      try raiseError()
      return
    }
    if shut {
      throw .unsupported(
        events, backend: "emulation",
        reason: "after POLLHUP the emulation can only signal a new edge while POLLERR is set")
    }
    if events.contains(.readable) {
      try Sys.sendDatagram(b, count: 0)
      _ = try Sys.receiveDatagram(a)
    }
    if events.contains(.writable) {
      try setSendBuffer(high: sendBufferHigh)
    }
  }

  /// Re-reads what the kernel objects show (after a consumer received from,
  /// or took the error of, the user's fd), then moves to `target`.
  /// Returns true when the fd had drifted from `target`.
  mutating func repair(to target: MaskState) throws(MaskError) -> Bool {
    let shown = MaskEvents(rawValue: try Sys.poll(a) & MaskEvents.all.rawValue)
    if !shut { inQueued = shown.contains(.readable) }
    errorPending = shown.contains(.error)
    dataLow = try Sys.timeoutSeconds(a, SO_SNDTIMEO)
    dataHigh = try Sys.timeoutSeconds(a, SO_RCVTIMEO)
    let drifted = shown != target.events || UInt64(dataHigh) << 32 | UInt64(dataLow) != target.data
    if !drifted { return false }
    try apply(target)
    let now = MaskEvents(rawValue: try Sys.poll(a) & MaskEvents.all.rawValue)
    if now != target.events {
      throw .unsupported(
        target.events, backend: "emulation(\(layout))",
        reason:
          "the fd shows \(now) after a repair: something other than this MaskFD sent on, shut down or resized the fd's socket, which the emulation cannot undo"
      )
    }
    return true
  }

  /// Reads the state back from the kernel objects (poll and socket options).
  func readBack() throws(MaskError) -> MaskState {
    let events = MaskEvents(rawValue: try Sys.poll(a) & MaskEvents.all.rawValue)
    let low = try Sys.timeoutSeconds(a, SO_SNDTIMEO)
    let high = try Sys.timeoutSeconds(a, SO_RCVTIMEO)
    return MaskState(events: events, data: UInt64(high) << 32 | UInt64(low))
  }

  func close() {
    Sys.close(a)
    Sys.close(b)
    if c >= 0 { Sys.close(c) }
  }

  // MARK: Mechanisms

  private mutating func park() throws(MaskError) {
    if let cAddress {
      // c is unconnected and never reads: the datagram stays for good.
      try Sys.sendDatagram(a, count: EmulatedMask.parkedBytes, to: cAddress)
    } else {
      try Sys.sendDatagram(a, count: EmulatedMask.parkedBytes)
    }
    parked = true
  }

  private mutating func setSendBuffer(high: Bool) throws(MaskError) {
    try Sys.setSocketOption(a, SO_SNDBUF, high ? EmulatedMask.highSendBuffer : 0)
    sendBufferHigh = high
  }

  private mutating func drainReadable() throws(MaskError) {
    while true {
      do {
        _ = try Sys.receiveDatagram(a)
        inQueued = false
        return
      } catch .system(_, let code) where code == ECONNRESET {
        errorPending = false
      }
    }
  }

  private mutating func raiseError() throws(MaskError) {
    let (aName, bName) = try errorPathNames()
    try Sys.disconnect(b)  // b's queue is non-empty: ECONNRESET on a; b's queue purged
    if layout == .pair { parked = false }
    try Sys.sendDatagram(b, count: 1, to: bName)  // re-prime while unconnected
    try Sys.connect(b, to: aName)
    errorPending = true
  }

  /// Names `a` and `b` on the first POLLERR and makes sure `b`'s queue holds
  /// a datagram, which the disconnect that raises the error needs. On
  /// `.pair` the parked datagram is already there; on `.full` `b` primes its
  /// own queue while unconnected (nothing is queued yet, so no error).
  private mutating func errorPathNames() throws(MaskError) -> (UnixAddress, UnixAddress) {
    if let aAddress, let bAddress { return (aAddress, bAddress) }
    let aName = try Sys.autobind(a)
    let bName = try Sys.autobind(b)
    if layout == .full || !parked {
      try Sys.disconnect(b)
      try Sys.sendDatagram(b, count: 1, to: bName)
      try Sys.connect(b, to: aName)
    }
    aAddress = aName
    bAddress = bName
    return (aName, bName)
  }

  private mutating func setData(_ data: UInt64) throws(MaskError) {
    let low = UInt32(truncatingIfNeeded: data)
    let high = UInt32(truncatingIfNeeded: data >> 32)
    if low != dataLow {
      try Sys.setTimeoutSeconds(a, SO_SNDTIMEO, low)
      dataLow = low
    }
    if high != dataHigh {
      try Sys.setTimeoutSeconds(a, SO_RCVTIMEO, high)
      dataHigh = high
    }
  }

  /// Checks on this kernel that a new mask shows nothing and that the
  /// POLLOUT toggle works both ways, as measured.
  private mutating func selfCheck() throws(MaskError) {
    let initial = try Sys.poll(a) & MaskEvents.all.rawValue
    try setSendBuffer(high: true)
    let high = try Sys.poll(a) & MaskEvents.all.rawValue
    try setSendBuffer(high: false)
    let low = try Sys.poll(a) & MaskEvents.all.rawValue
    guard initial == 0, high == MaskEvents.writable.rawValue, low == 0 else {
      throw .backendUnavailable(
        .emulation,
        reason:
          "self-check failed on this kernel: a new mask fd showed \(MaskEvents(rawValue: initial)), with a high send buffer \(MaskEvents(rawValue: high)), with a low one \(MaskEvents(rawValue: low))"
      )
    }
  }
}
