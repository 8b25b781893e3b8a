import TestSupport
import Testing

@testable import UserProto

/// The generation tags that keep a completion for a finished operation (an
/// fd closed and its number reused) from reaching the slot's next owner.
@Suite("Operation table generations", .testThreads)
struct OperationTableTests {
  @Test("a released slot's old token finds nothing, even once the slot is reused")
  func staleTokenAfterReuse() {
    var table = OperationTable()
    let calls = Collector<String>()
    let old = table.insert { _ in calls.append("old") }
    table.release(old)
    #expect(table.handler(for: old) == nil)
    let new = table.insert { _ in calls.append("new") }
    #expect(new & 0xffff_ffff == old & 0xffff_ffff, "the slot was reused")
    #expect(new != old, "with another generation")
    #expect(table.handler(for: old) == nil, "the stale token misses the new owner")
    #expect(!table.isLive(old) && table.isLive(new))
    table.handler(for: new)?(.events(0))
    #expect(calls.values == ["new"])
    // Releasing through the stale token leaves the new owner alone.
    table.release(old)
    #expect(table.isLive(new) && table.count == 1)
  }

  @Test("generations stay distinct over many reuses of one slot and never reach 0")
  func manyReuses() {
    var table = OperationTable()
    var seen = Set<UInt64>()
    for _ in 0..<10_000 {
      let token = table.insert { _ in }
      #expect(token >> 32 != 0)
      #expect(seen.insert(token).inserted, "token \(token) handed out twice")
      table.release(token)
    }
    #expect(table.count == 0)
  }
}
