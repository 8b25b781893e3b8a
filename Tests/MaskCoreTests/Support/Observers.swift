import CUserProtoShim
import CUserProtoTestShim
import Glibc
import MaskCore
import Testing

/// Watches one fd through every readiness interface a consumer might use:
/// poll, select, epoll level-triggered, edge-triggered and one-shot, and
/// io_uring POLL_ADD single-shot and multishot.
final class Observers {
  let fd: Int32
  private let levelTriggered: Int32
  private let edgeTriggered: Int32
  private let oneShot: Int32
  /// A one-shot registration armed before a transition (see ``armBefore``).
  private let preArmed: Int32
  private var preArmedRegistered = false
  private let ring: OpaquePointer
  private static let multishotTag: UInt64 = 0x4d53
  private static let singleTag: UInt64 = 0x5353
  private static let removeTag: UInt64 = 0x524d
  private static let preArmedTag: UInt64 = 0x5041
  private static let allEvents = MaskEvents.all.rawValue

  init(fd: Int32) throws {
    self.fd = fd
    levelTriggered = epoll_create1(Int32(EPOLL_CLOEXEC))
    edgeTriggered = epoll_create1(Int32(EPOLL_CLOEXEC))
    oneShot = epoll_create1(Int32(EPOLL_CLOEXEC))
    preArmed = epoll_create1(Int32(EPOLL_CLOEXEC))
    try #require(levelTriggered >= 0 && edgeTriggered >= 0 && oneShot >= 0 && preArmed >= 0)
    try Observers.add(levelTriggered, fd, Observers.allEvents)
    try Observers.add(edgeTriggered, fd, Observers.allEvents | EPOLLET.rawValue)
    try Observers.add(oneShot, fd, Observers.allEvents | EPOLLONESHOT.rawValue)
    var error: Int32 = 0
    guard let ring = up_ring_create(64, 0, &error) else {
      Issue.record("io_uring setup failed: \(error)")
      throw ObserverError.ring(error)
    }
    self.ring = ring
    try armMultishot()
  }

  deinit {
    close(levelTriggered)
    close(edgeTriggered)
    close(oneShot)
    close(preArmed)
    up_ring_destroy(ring)
  }

  enum ObserverError: Error { case ring(Int32) }

  private static func add(_ epfd: Int32, _ fd: Int32, _ events: UInt32) throws {
    var event = epoll_event()
    event.events = events
    event.data.u64 = UInt64(fd)
    try #require(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0, "epoll_ctl ADD errno \(errno)")
  }

  private func armMultishot() throws {
    try #require(up_ring_prep_poll_add(ring, fd, Observers.allEvents, Observers.multishotTag, 1) == 0)
    try #require(up_ring_submit(ring) >= 0)
  }

  // MARK: Level views

  func poll() -> MaskEvents {
    var entry = pollfd(fd: fd, events: Int16(Observers.allEvents), revents: 0)
    _ = Glibc.poll(&entry, 1, 0)
    return MaskEvents(rawValue: UInt32(UInt16(bitPattern: entry.revents)) & Observers.allEvents)
  }

  /// select(2)'s three sets as a consumer sees them.
  struct SelectView: Equatable, CustomStringConvertible {
    var readable = false
    var writable = false
    var exceptional = false
    /// What select reports for a poll mask: the kernel's POLLIN_SET,
    /// POLLOUT_SET and POLLEX_SET.
    init(expecting events: MaskEvents) {
      readable = !events.isDisjoint(with: [.readable, .hangup, .error])
      writable = !events.isDisjoint(with: [.writable, .error])
      exceptional = events.contains(.priority)
    }
    init(bits: Int32) {
      readable = bits & 1 != 0
      writable = bits & 2 != 0
      exceptional = bits & 4 != 0
    }
    var description: String { "r=\(readable) w=\(writable) x=\(exceptional)" }
  }

  func select() -> SelectView { SelectView(bits: up_select_one(fd, 0)) }

  private func wait(_ epfd: Int32) -> [MaskEvents] {
    var events = [epoll_event](repeating: epoll_event(), count: 4)
    let n = epoll_wait(epfd, &events, 4, 0)
    guard n > 0 else { return [] }
    return events[0..<Int(n)].map { MaskEvents(rawValue: $0.events & Observers.allEvents) }
  }

  func epollLevel() -> [MaskEvents] { wait(levelTriggered) }
  func epollEdge() -> [MaskEvents] { wait(edgeTriggered) }

  /// Re-arms the one-shot registration, then returns what it reports and
  /// what a second wait reports (must be nothing: it disarmed).
  func epollOneShot() -> (first: [MaskEvents], second: [MaskEvents]) {
    var event = epoll_event()
    event.events = Observers.allEvents | EPOLLONESHOT.rawValue
    event.data.u64 = UInt64(fd)
    _ = epoll_ctl(oneShot, EPOLL_CTL_MOD, fd, &event)
    return (wait(oneShot), wait(oneShot))
  }

  /// Arms a single-shot POLL_ADD and returns its result, or nil when it did
  /// not complete (the fd showed nothing); then it is cancelled.
  func uringSingleShot() throws -> MaskEvents? {
    try #require(up_ring_prep_poll_add(ring, fd, Observers.allEvents, Observers.singleTag, 0) == 0)
    try #require(up_ring_submit(ring) >= 0)
    var result: MaskEvents?
    var cqes = [up_cqe](repeating: up_cqe(), count: 16)
    // A ready fd completes during submit; an unready one never completes.
    let n = up_ring_reap(ring, &cqes, 16)
    for cqe in cqes[0..<Int(n)] { absorb(cqe, single: &result) }
    if result == nil {
      try #require(up_ring_prep_poll_remove(ring, Observers.singleTag, Observers.removeTag) == 0)
      _ = up_ring_submit_and_wait(ring, 2, 1_000_000)
      let m = up_ring_reap(ring, &cqes, 16)
      for cqe in cqes[0..<Int(m)] { absorb(cqe, single: &result) }
    }
    return result
  }

  /// Arms an EPOLLONESHOT registration and an io_uring single-shot POLL_ADD
  /// for `interest` while the fd shows none of it (nor POLLERR or POLLHUP,
  /// which both always report), so that they are waiting when the
  /// transition happens. ``collectArmed()`` returns what they delivered.
  func armBefore(interest: MaskEvents) throws {
    var event = epoll_event()
    event.events = interest.rawValue | EPOLLONESHOT.rawValue
    event.data.u64 = UInt64(fd)
    let op = preArmedRegistered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD
    try #require(epoll_ctl(preArmed, op, fd, &event) == 0, "epoll_ctl errno \(errno)")
    preArmedRegistered = true
    try #require(up_ring_prep_poll_add(ring, fd, interest.rawValue, Observers.preArmedTag, 0) == 0)
    try #require(up_ring_submit(ring) >= 0)
  }

  /// What the registrations armed by ``armBefore(interest:)`` delivered:
  /// the one-shot's report and the single-shot's result (waiting up to a
  /// second for it); an undelivered single-shot is cancelled.
  func collectArmed() throws -> (oneShot: [MaskEvents], single: MaskEvents?) {
    let reported = wait(preArmed)
    var single: MaskEvents?
    var cqes = [up_cqe](repeating: up_cqe(), count: 16)
    var n = up_ring_reap(ring, &cqes, 16)
    var sawArmed = cqes[0..<Int(n)].contains { $0.user_data == Observers.preArmedTag }
    absorbAll(cqes[0..<Int(n)], armed: &single)
    if !sawArmed {
      _ = up_ring_submit_and_wait(ring, 1, 1_000_000)
      n = up_ring_reap(ring, &cqes, 16)
      sawArmed = cqes[0..<Int(n)].contains { $0.user_data == Observers.preArmedTag }
      absorbAll(cqes[0..<Int(n)], armed: &single)
    }
    if !sawArmed {
      try #require(up_ring_prep_poll_remove(ring, Observers.preArmedTag, Observers.removeTag) == 0)
      _ = up_ring_submit_and_wait(ring, 2, 1_000_000)
      n = up_ring_reap(ring, &cqes, 16)
      absorbAll(cqes[0..<Int(n)], armed: &single)
    }
    return (reported, single)
  }

  private func absorbAll(_ cqes: ArraySlice<up_cqe>, armed: inout MaskEvents?) {
    var unused: MaskEvents?
    for cqe in cqes {
      if cqe.user_data == Observers.preArmedTag {
        if cqe.res > 0 { armed = MaskEvents(rawValue: UInt32(cqe.res) & Observers.allEvents) }
      } else {
        absorb(cqe, single: &unused)
      }
    }
  }

  private var pendingMultishot: [UInt32] = []

  private func absorb(_ cqe: up_cqe, single: inout MaskEvents?) {
    switch cqe.user_data {
    case Observers.singleTag where cqe.res > 0:
      single = MaskEvents(rawValue: UInt32(cqe.res) & Observers.allEvents)
    case Observers.multishotTag:
      if cqe.res > 0 { pendingMultishot.append(UInt32(cqe.res)) }
      if cqe.flags & up_IORING_CQE_F_MORE == 0 { multishotEnded = true }
    default:
      break
    }
  }

  private var multishotEnded = false

  /// The results the multishot POLL_ADD posted since the last call. When
  /// `expectingOne`, waits up to a second for the first one.
  func uringMultishot(expectingOne: Bool) throws -> [UInt32] {
    var cqes = [up_cqe](repeating: up_cqe(), count: 32)
    var unused: MaskEvents?
    var n = up_ring_reap(ring, &cqes, 32)
    if n == 0 && expectingOne && pendingMultishot.isEmpty {
      _ = up_ring_submit_and_wait(ring, 1, 1_000_000)
      n = up_ring_reap(ring, &cqes, 32)
    }
    for cqe in cqes[0..<Int(n)] { absorb(cqe, single: &unused) }
    let results = pendingMultishot
    pendingMultishot = []
    if multishotEnded {
      multishotEnded = false
      try armMultishot()
    }
    return results
  }

  /// Empties every queued notification.
  func drain() throws {
    _ = epollEdge()
    _ = epollOneShot()
    _ = try uringMultishot(expectingOne: false)
  }
}
