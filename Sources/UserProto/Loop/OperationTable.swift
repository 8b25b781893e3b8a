/// The loop's live operations, by token. A token is a slot index plus the
/// slot's generation: when a slot is reused its generation changes, so a
/// completion for an earlier operation (an fd closed and its number reused)
/// never reaches the new owner.
struct OperationTable {
  typealias Handler = (CompletionValue) -> Void

  private struct Slot {
    var generation: UInt32 = 1
    var handler: Handler?
  }

  private var slots: [Slot] = []
  private var free: [Int] = []
  private(set) var count = 0

  static func token(index: Int, generation: UInt32) -> UInt64 {
    UInt64(generation) << 32 | UInt64(index)
  }

  mutating func insert(_ handler: @escaping Handler) -> UInt64 {
    let index: Int
    if let reused = free.popLast() {
      index = reused
    } else {
      index = slots.count
      slots.append(Slot())
    }
    slots[index].handler = handler
    count += 1
    return OperationTable.token(index: index, generation: slots[index].generation)
  }

  private func slot(_ token: UInt64) -> Int? {
    let index = Int(token & 0xffff_ffff)
    let generation = UInt32(token >> 32)
    guard index < slots.count, slots[index].generation == generation, slots[index].handler != nil else { return nil }
    return index
  }

  func handler(for token: UInt64) -> Handler? {
    slot(token).flatMap { slots[$0].handler }
  }

  func isLive(_ token: UInt64) -> Bool { slot(token) != nil }

  mutating func release(_ token: UInt64) {
    guard let index = slot(token) else { return }
    slots[index].handler = nil
    slots[index].generation = slots[index].generation &+ 1
    if slots[index].generation == 0 { slots[index].generation = 1 }
    free.append(index)
    count -= 1
  }

  var liveTokens: [UInt64] {
    slots.indices.compactMap { i in
      slots[i].handler == nil ? nil : OperationTable.token(index: i, generation: slots[i].generation)
    }
  }

  /// Removes every live operation and returns it.
  mutating func drain() -> [(UInt64, Handler)] {
    var all: [(UInt64, Handler)] = []
    for token in liveTokens {
      if let handler = handler(for: token) { all.append((token, handler)) }
      release(token)
    }
    return all
  }
}
