import Glibc
import MaskCore
import TestSupport
import Testing

/// No fd leaks: a separate process counts /proc/self/fd around 10,000
/// create/close cycles (a process of its own, so that tests running in
/// parallel here cannot disturb the count).
@Suite("Descriptor leaks", .testThreads)
struct LeakTests {
  static func cycles(_ layout: MaskLayout) throws {
    let name: String
    switch layout {
    case .kernel: name = "kernel"
    case .module: name = "module"
    case .emulation(let e): name = e.rawValue
    }
    let (status, values) = try runHelper(["leak", name, "10000"])
    #expect(status == 0, "helper output \(values)")
    let before = try #require(Int(values["before"] ?? ""))
    let after = try #require(Int(values["after"] ?? ""))
    #expect(before == after, "open fds before \(before), after \(after) 10,000 cycles on \(layout)")
  }

  @Test("10,000 create/close cycles leak no fd", arguments: emulationLayouts)
  func createClose(layout: MaskLayout) throws { try LeakTests.cycles(layout) }

  @Test("dropping a mask fd without close() closes it", arguments: emulationLayouts)
  func deinitCloses(layout: MaskLayout) throws {
    var fd: Int32 = -1
    do {
      let mask = try makeMask(layout)
      try mask.set([.writable], data: 0xfeed)
      fd = mask.fileDescriptor
      #expect(try MaskFD.inspect(descriptor: fd).data == 0xfeed)
    }
    // The number may have been reused by a parallel test; if it is open, it
    // must at least not be our socket with its mask data.
    if fcntl(fd, F_GETFD) >= 0, let state = try? MaskFD.inspect(descriptor: fd) {
      #expect(state.data != 0xfeed)
    }
  }
}
