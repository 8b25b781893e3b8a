import TestSupport
import Testing

@testable import Examples

@Suite("Demo", .testThreads)
struct DemoTests {
  @Test("the demo runs end to end; only the stalled subscriber loses messages")
  func demo() throws {
    let demo = try Demo.parse(["--seconds", "1"])
    let summary = try demo.runDemo()
    #expect(summary.problems.isEmpty, "\(summary.problems)")
    #expect(summary.mismatches == 0)
    #expect(summary.roundTrips > 0)
    #expect(summary.received.count == 4 && summary.received.allSatisfy { $0 > 0 }, "\(summary.received)")
    // Subscribers 1-3 kept reading: nothing dropped for them, and each saw
    // every published message (kept or filtered out).
    for i in 0..<3 {
      #expect(summary.dropped[i] == 0, "subscriber \(i + 1): \(summary.dropped)")
      #expect(summary.received[i] + summary.filtered[i] == summary.published, "subscriber \(i + 1)")
    }
    // All the drops, if any, are the stalled subscriber's, and it lost
    // only what was dropped for it.
    #expect(summary.totalDropped == summary.dropped[3])
    #expect(summary.received[3] + summary.dropped[3] == summary.published)
  }

  @Test("the demo's checks catch a drop for a subscriber that kept reading")
  func checksCatchDrops() {
    var summary = Demo.Summary(
      roundTrips: 1, published: 10, received: [3, 3, 3, 5], dropped: [0, 2, 0, 5], filtered: [7, 5, 7, 0],
      totalDropped: 7, tickerLines: 0, mismatches: 0, stalled: 3)
    #expect(summary.problems == ["subscriber 2 kept reading but lost 2 messages"])
    summary.dropped[1] = 0
    summary.filtered[1] = 7
    summary.totalDropped = 5
    #expect(summary.problems.isEmpty)
  }
}
