import TestSupport
import Testing

@testable import UserProto

@Suite("FIFO queue", .testThreads)
struct FIFOTests {
  /// A class whose instances count how many are alive.
  final class Tracked {
    nonisolated(unsafe) static var alive = 0
    let value: Int
    init(_ value: Int) {
      self.value = value
      Tracked.alive += 1
    }
    deinit { Tracked.alive -= 1 }
  }

  @Test("order is kept across compactions, with appends interleaved")
  func order() {
    var queue = FIFO<Int>()
    var model: [Int] = []
    var next = 0
    // Grow and shrink in waves so the head passes the compaction threshold
    // (more than 64 taken and more than half of the storage) many times.
    for wave in 0..<50 {
      for _ in 0..<(wave % 7 == 0 ? 300 : 90) {
        queue.append(next)
        model.append(next)
        next += 1
      }
      for _ in 0..<(wave % 5 == 0 ? 400 : 70) {
        #expect(queue.popFirst() == (model.isEmpty ? nil : model.removeFirst()))
      }
      #expect(queue.count == model.count)
      #expect(queue.isEmpty == model.isEmpty)
    }
    while let value = queue.popFirst() { #expect(value == model.removeFirst()) }
    #expect(model.isEmpty)
    #expect(queue.popFirst() == nil)
  }

  @Test("a taken element is released at once; removeAll releases the rest")
  func releases() {
    do {
      var queue = FIFO<Tracked>()
      for i in 0..<10 { queue.append(Tracked(i)) }
      #expect(Tracked.alive == 10)
      for i in 0..<4 { #expect(queue.popFirst()?.value == i) }
      // The queue keeps no reference to what it handed out.
      #expect(Tracked.alive == 6)
      queue.removeAll()
      #expect(Tracked.alive == 0)
      #expect(queue.isEmpty && queue.count == 0)
    }
    #expect(Tracked.alive == 0)
  }
}
