/// A binary min-heap of timers ordered by deadline, then by scheduling
/// order. Cancelled timers are removed lazily: cancellation is O(1), and a
/// cancelled entry is dropped when it reaches the top.
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
      var parent = 0
      while true {
        let left = 2 * parent + 1
        let right = left + 1
        var smallest = parent
        if left < storage.count && TimerHeap.less(storage[left], storage[smallest]) { smallest = left }
        if right < storage.count && TimerHeap.less(storage[right], storage[smallest]) { smallest = right }
        if smallest == parent { break }
        storage.swapAt(parent, smallest)
        parent = smallest
      }
    }
    return top
  }

  mutating func removeAll() { storage.removeAll() }
}
