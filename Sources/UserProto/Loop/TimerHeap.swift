import Synchronization

/// A binary min-heap of timers ordered by deadline, then by scheduling
/// order. Cancelled timers are removed lazily: cancellation is O(1), a
/// cancelled entry is dropped when it reaches the top, and the loop compacts
/// the heap (``removeAll(where:)``) when cancelled entries are the majority.
struct TimerHeap {
  struct Entry {
    var deadline: UInt64
    var sequence: UInt64
    var id: UInt64
  }

  private var storage: [Entry] = []

  var isEmpty: Bool { storage.isEmpty }
  var count: Int { storage.count }
  var first: Entry? { storage.first }

  private static func less(_ a: Entry, _ b: Entry) -> Bool {
    a.deadline != b.deadline ? a.deadline < b.deadline : a.sequence < b.sequence
  }

  mutating func insert(_ entry: Entry) {
    storage.append(entry)
    var child = storage.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard TimerHeap.less(storage[child], storage[parent]) else { break }
      storage.swapAt(child, parent)
      child = parent
    }
  }

  @discardableResult
  mutating func removeFirst() -> Entry? {
    guard !storage.isEmpty else { return nil }
    let top = storage[0]
    let last = storage.removeLast()
    if !storage.isEmpty {
      storage[0] = last
      siftDown(from: 0)
    }
    return top
  }

  mutating func removeAll() { storage.removeAll() }

  /// Removes the matching entries and restores the heap order, in O(n).
  mutating func removeAll(where shouldRemove: (Entry) -> Bool) {
    storage.removeAll(where: shouldRemove)
    var index = storage.count / 2
    while index > 0 {
      index -= 1
      siftDown(from: index)
    }
  }

  private mutating func siftDown(from start: Int) {
    var parent = start
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < storage.count && TimerHeap.less(storage[left], storage[smallest]) { smallest = left }
      if right < storage.count && TimerHeap.less(storage[right], storage[smallest]) { smallest = right }
      if smallest == parent { return }
      storage.swapAt(parent, smallest)
      parent = smallest
    }
  }
}

/// Whether a timer is still pending, shared by its handle (any thread) and
/// the loop: exactly one of firing and cancelling wins.
final class TimerState: Sendable {
  private static let pending: UInt8 = 0
  private static let fired: UInt8 = 1
  private static let cancelled: UInt8 = 2
  private let phase = Atomic<UInt8>(TimerState.pending)

  var isPending: Bool { phase.load(ordering: .acquiring) == TimerState.pending }

  /// Claims the timer for running (or for its shutdown action).
  func fire() -> Bool {
    phase.compareExchange(expected: TimerState.pending, desired: TimerState.fired, ordering: .acquiringAndReleasing)
      .exchanged
  }

  /// Claims the timer for cancellation: once true, it never runs.
  func cancel() -> Bool {
    phase.compareExchange(
      expected: TimerState.pending, desired: TimerState.cancelled, ordering: .acquiringAndReleasing
    ).exchanged
  }
}
