import Glibc
import TestSupport
import Testing

/// The tutorial quotes code from the sources; each quoted block must still
/// appear there, line for line, so the page only shows code that compiles.
@Suite("Tutorial", .testThreads)
struct TutorialTests {
  static func read(_ path: String) -> String {
    guard let file = fopen(path, "r") else { return "" }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = fread(&buffer, 1, buffer.count, file)
      if n <= 0 { break }
      bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// The package root, found from this file's path.
  static var root: String {
    var path = #filePath
    for _ in 0..<3 {
      while let last = path.last, last != "/" { path.removeLast() }
      path.removeLast()
    }
    return path
  }

  @Test("every Swift excerpt in docs/tutorial.md appears verbatim in the file it names")
  func excerptsMatchSources() throws {
    let doc = TutorialTests.read(TutorialTests.root + "/docs/tutorial.md")
    try #require(!doc.isEmpty, "docs/tutorial.md not found")
    var blocks: [[Substring]] = []
    var current: [Substring]?
    var inShellBlock = false
    for line in doc.split(separator: "\n", omittingEmptySubsequences: false) {
      // Any other way of opening a Swift block would escape the check.
      let fence = line.drop { $0 == " " }
      if fence.hasPrefix("```") && current == nil {
        if inShellBlock {
          inShellBlock = fence != "```"
          continue
        }
        #expect(
          line == "```swift" || line == "```sh", "only ```swift and ```sh blocks, unindented: \(line)")
        if line == "```sh" {
          inShellBlock = true
          continue
        }
      }
      if line == "```swift" {
        current = []
      } else if line == "```", let block = current {
        blocks.append(block)
        current = nil
      } else {
        current?.append(line)
      }
    }
    #expect(blocks.count >= 10)
    for block in blocks {
      let header = try #require(block.first)
      try #require(header.hasPrefix("// Sources/"), "each excerpt names its source file: \(header)")
      let source = TutorialTests.read(TutorialTests.root + "/" + header.dropFirst(3))
      try #require(!source.isEmpty, "\(header) not found")
      let excerpt = block.dropFirst().joined(separator: "\n")
      #expect(source.contains(excerpt), "excerpt from \(header) no longer matches the source:\n\(excerpt)")
    }
  }
}
