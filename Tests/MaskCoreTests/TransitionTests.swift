import MaskCore
import TestSupport
import Testing

/// Every supported combination and every transition between them, seen the
/// same way through poll, select, epoll LT/ET/ONESHOT and io_uring.
@Suite("Transitions", .testThreads)
struct TransitionTests {
  /// Checks every view of `observers` after moving `mask` from `from` to `to`.
  static func check(
    _ mask: MaskFD, _ observers: Observers, from: MaskEvents, to: MaskEvents, data: UInt64,
    comment: String
  ) throws {
    try mask.set(from)
    try observers.drain()
    let newlySet = to.subtracting(from)
    // One-shot consumers that armed before the change must be woken by it.
    // Only checkable while the old state shows nothing they listen for
    // (POLLERR and POLLHUP are always listened for).
    let armed = !newlySet.isEmpty && from.isDisjoint(with: [.error, .hangup])
    if armed { try observers.armBefore(interest: newlySet) }
    try mask.set(to, data: data)
    let label = "\(comment): \(from) -> \(to)"
    if armed {
      let (oneShot, single) = try observers.collectArmed()
      let reportable = to.intersection(newlySet.union([.error, .hangup]))
      #expect(oneShot == [reportable], "epoll ONESHOT armed before, \(label)")
      #expect(single.map { !$0.isDisjoint(with: newlySet) } == true, "io_uring single-shot armed before, \(label)")
    }

    #expect(observers.poll() == to, "poll, \(label)")
    #expect(observers.select() == Observers.SelectView(expecting: to), "select, \(label)")

    let level = observers.epollLevel()
    #expect(level == (to.isEmpty ? [] : [to]), "epoll LT, \(label)")

    // Edge-triggered: a new edge whenever a bit was newly set; whatever it
    // reports is the current state (epoll re-polls when it reports).
    let edges = observers.epollEdge()
    #expect(edges.count <= 1, "epoll ET reports one item at most, \(label)")
    if !newlySet.isEmpty { #expect(edges == [to], "epoll ET edge for \(newlySet), \(label)") }
    for edge in edges { #expect(edge == to, "epoll ET mask, \(label)") }

    let (first, second) = observers.epollOneShot()
    #expect(first == (to.isEmpty ? [] : [to]), "epoll ONESHOT after re-arm, \(label)")
    #expect(second.isEmpty, "epoll ONESHOT disarmed after one report, \(label)")

    let single = try observers.uringSingleShot()
    #expect(single == (to.isEmpty ? nil : to), "io_uring POLL_ADD single-shot, \(label)")

    // Multishot: a completion whenever a bit was newly set. Its res is the
    // wake key ANDed with the requested events, not the level (documented),
    // so the level is checked by re-polling, as consumers must.
    let shots = try observers.uringMultishot(expectingOne: !newlySet.isEmpty)
    if !newlySet.isEmpty {
      #expect(!shots.isEmpty, "io_uring multishot completion for \(newlySet), \(label)")
      #expect(observers.poll() == to, "re-poll after multishot completion, \(label)")
    }

    #expect(try mask.get() == MaskState(events: to, data: data), "get, \(label)")
    #expect(try mask.readBack() == MaskState(events: to, data: data), "readBack, \(label)")
  }

  @Test("every transition between reachable states", arguments: emulationLayouts)
  func everyTransition(layout: MaskLayout) throws {
    let supported = layout.supportedCombinations
    let reversible = supported.filter { layout.fidelity($0) == .exact }
    let terminal = supported.filter { layout.fidelity($0) == .terminal }
    var checked = 0

    // Between reversible states: one long-lived fd.
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let observers = try Observers(fd: mask.fileDescriptor)
    for from in reversible {
      for to in reversible {
        try TransitionTests.check(
          mask, observers, from: from, to: to, data: UInt64(checked) &* 0x9E37_79B9_7F4A_7C15, comment: "\(layout)")
        checked += 1
      }
    }
    // Into and between terminal states: a fresh fd per transition.
    for from in reversible + terminal {
      for to in terminal where from.contains(.hangup) == false || to.isSuperset(of: [.hangup]) {
        let fresh = try makeMask(layout)
        defer { try? fresh.close() }
        try fresh.set(from)
        let freshObservers = try Observers(fd: fresh.fileDescriptor)
        try TransitionTests.check(
          fresh, freshObservers, from: from, to: to, data: UInt64(checked), comment: "\(layout)")
        checked += 1
      }
    }
    // The transition counts the fidelity table implies (exact x exact, plus
    // every reachable state into each terminal one).
    let expected: Int
    switch layout {
    case .kernel, .module: expected = 32 * 32
    case .emulation(.full): expected = 12 * 12 + 18 * 6
    case .emulation(.pair): expected = 8 * 8 + 11 * 3
    }
    #expect(checked == expected, "\(checked) transitions checked on \(layout)")
  }

  @Test("unsupported combinations throw and change nothing", arguments: emulationLayouts)
  func unsupportedCombinations(layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    try mask.set([.readable], data: 99)
    let unsupported = MaskEvents.allCombinations.filter { layout.fidelity($0) == .unsupported }
    if hasRecord(layout) {
      #expect(unsupported.isEmpty, "the kernel and module backends show all 32 combinations")
    } else {
      #expect(!unsupported.isEmpty)
    }
    for events in unsupported {
      do {
        try mask.set(events)
        Issue.record("\(events) on \(layout) must throw")
      } catch {
        guard case .unsupported(let named, _, let reason) = error else {
          Issue.record("unexpected \(error)")
          continue
        }
        #expect(named == events, "the error names the combination")
        #expect(reason.contains("supported:"), "the error says what the backend supports: \(reason)")
        #expect("\(error)".contains("\(events)"))
      }
      #expect(try mask.get() == MaskState(events: [.readable], data: 99))
      #expect(try mask.readBack() == MaskState(events: [.readable], data: 99))
    }
  }

  @Test("hangup is terminal on the emulation", arguments: EmulationLayout.allCases)
  func hangupIsTerminal(layout: EmulationLayout) throws {
    let mask = try MaskFD(backend: .emulation(layout))
    defer { try? mask.close() }
    try mask.set([.readable, .writable, .hangup])
    do {
      try mask.set([.readable, .writable])
      Issue.record("leaving POLLHUP must throw")
    } catch {
      guard case .unsupported(_, _, let reason) = error else {
        Issue.record("unexpected \(error)")
        return
      }
      #expect(reason.contains("terminal"))
    }
    #expect(try mask.readBack().events == [.readable, .writable, .hangup])
  }

  @Test("random walk: the fd always shows the state last set", arguments: emulationLayouts)
  func randomWalk(layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let observers = try Observers(fd: mask.fileDescriptor)
    let reachable = layout.supportedCombinations.filter { layout.fidelity($0) == .exact }
    var generator = SplitMix64(seed: 0x5EED)
    for step in 0..<3000 {
      let events = reachable[Int(generator.next() % UInt64(reachable.count))]
      let data = generator.next()
      try mask.set(events, data: data)
      guard observers.poll() == events, try mask.readBack() == MaskState(events: events, data: data) else {
        Issue.record("step \(step): set \(events), fd shows \(observers.poll())")
        return
      }
    }
  }

  @Test("setting the state already set makes no syscall and no edge", arguments: emulationLayouts)
  func idempotentSet(layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let observers = try Observers(fd: mask.fileDescriptor)
    try mask.set([.readable, .writable], data: 5)
    try observers.drain()
    try mask.set([.readable, .writable], data: 5)
    try mask.set([.readable, .writable])
    #expect(observers.epollEdge().isEmpty)
    #expect(try observers.uringMultishot(expectingOne: false).isEmpty)
  }

  @Test("resignal gives edge-triggered consumers a new edge", arguments: emulationLayouts)
  func resignal(layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let observers = try Observers(fd: mask.fileDescriptor)
    for events in layout.supportedCombinations where !events.isEmpty && layout.fidelity(events) == .exact {
      try mask.set(events)
      try observers.drain()
      try mask.resignal()
      #expect(observers.epollEdge() == [events], "resignal \(events) on \(layout)")
      #expect(try !observers.uringMultishot(expectingOne: true).isEmpty, "multishot after resignal \(events)")
      #expect(observers.poll() == events)
    }
  }

  @Test("update inserts and removes atomically", arguments: emulationLayouts)
  func update(layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    #expect(try mask.update(inserting: .readable) == [.readable])
    #expect(try mask.update(inserting: .writable, removing: .readable) == [.writable])
    #expect(try mask.readBack().events == [.writable])
  }
}

/// A small deterministic generator for reproducible walks.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
