/// A first-in, first-out queue whose removal from the front is amortized
/// O(1): an array and a head index. A taken slot is cleared at once, so the
/// queue never keeps a taken element alive, and the storage is compacted
/// once the taken prefix is more than half of it.
struct FIFO<Element> {
  private var storage: [Element?] = []
  private var head = 0

  var isEmpty: Bool { head == storage.count }
  var count: Int { storage.count - head }

  mutating func append(_ element: Element) { storage.append(element) }

  /// The element `popFirst()` would return, without taking it.
  var first: Element? { head < storage.count ? storage[head] : nil }

  mutating func popFirst() -> Element? {
    guard head < storage.count else { return nil }
    let element = storage[head].take()
    head += 1
    if head == storage.count {
      storage.removeAll(keepingCapacity: true)
      head = 0
    } else if head > 64 && head * 2 > storage.count {
      storage.removeFirst(head)
      head = 0
    }
    return element
  }

  mutating func removeAll() {
    storage = []
    head = 0
  }
}

extension FIFO: Sendable where Element: Sendable {}
