import CUserProtoTestShim
import Glibc
import MaskCore
import TestSupport
import Testing

/// Another process sees the state: a child after fork/exec, and a process
/// that receives the fd with SCM_RIGHTS.
@Suite("Other processes", .testThreads)
struct CrossProcessTests {
  static func childSeesState(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    for (events, data): (MaskEvents, UInt64) in [
      ([], 0), ([.readable, .writable], 0xdead_beef_0bad_f00d), ([.writable], 1),
    ] {
      try mask.set(events, data: data)
      let (status, values) = try runHelper(["inspect", "3"], inheriting: [(mask.fileDescriptor, 3)])
      #expect(status == 0, "helper output \(values)")
      #expect(values["events"] == String(events.rawValue), "\(layout) child sees \(events)")
      #expect(values["data"] == String(data, radix: 16), "\(layout) child reads the data")
    }
  }

  static func scmRightsReceiverSeesState(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    try mask.set([.readable], data: 0x1234_5678_9abc_def0)
    var pair: [Int32] = [-1, -1]
    try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
    defer {
      close(pair[0])
      close(pair[1])
    }
    let (status, values) = try runHelper(["recv-fd", "3"], inheriting: [(pair[1], 3)]) {
      #expect(up_send_fd(pair[0], mask.fileDescriptor) == 0)
    }
    #expect(status == 0, "helper output \(values)")
    #expect(values["events"] == String(MaskEvents.readable.rawValue))
    #expect(values["data"] == "123456789abcdef0")
  }

  static func childWokenAcrossProcesses(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    let (status, values) = try runHelper(["wait", "3", "1", "10000"], inheriting: [(mask.fileDescriptor, 3)]) {
      usleep(50_000)
      try mask.set([.readable])
    }
    #expect(status == 0)
    #expect(values["ready"] == "1", "the child's poll returned before its timeout")
    #expect(values["revents"] == "1")
  }

  @Test("a child after fork/exec reads events and data", arguments: emulationLayouts)
  func child(layout: MaskLayout) throws { try CrossProcessTests.childSeesState(layout) }

  @Test("a process receiving the fd with SCM_RIGHTS reads it", arguments: emulationLayouts)
  func scmRights(layout: MaskLayout) throws { try CrossProcessTests.scmRightsReceiverSeesState(layout) }

  @Test("a child blocked in poll wakes when this process sets readable", arguments: emulationLayouts)
  func crossProcessWake(layout: MaskLayout) throws { try CrossProcessTests.childWokenAcrossProcesses(layout) }
}
