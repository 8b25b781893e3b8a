import Testing

@testable import Examples

@Suite("Demo")
struct DemoTests {
  @Test("the demo runs end to end and checks its own results")
  func demo() throws {
    // Demo.run throws (exit code 1) on a mismatched reply or topic, or when
    // any subscriber or requester got nothing.
    let demo = try Demo.parse(["--seconds", "1"])
    try demo.run()
    #expect(demo.seconds == 1)
  }
}
