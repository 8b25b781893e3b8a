import Glibc
import TestSupport
import Testing

@testable import MaskCore

/// Bad input gets a clear error and changes nothing.
@Suite("Bad input", .testThreads)
struct BadInputTests {
  static func invalidBits(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    defer { try? mask.close() }
    try mask.set([.writable], data: 3)
    for raw: UInt32 in [0x20, 0x40, 0x2000, 0x8000_0000, 0x21] {
      #expect(throws: MaskError.invalidEvents(raw & ~MaskEvents.all.rawValue)) {
        try mask.set(MaskEvents(rawValue: raw))
      }
      #expect(throws: MaskError.invalidEvents(raw & ~MaskEvents.all.rawValue)) {
        try mask.update(inserting: MaskEvents(rawValue: raw))
      }
    }
    #expect(try mask.readBack() == MaskState(events: [.writable], data: 3))
    let message = String(describing: MaskError.invalidEvents(0x20))
    #expect(message.contains("0x20") && message.contains("POLLIN"))
  }

  static func useAfterClose(_ layout: MaskLayout) throws {
    let mask = try makeMask(layout)
    try mask.close()
    #expect(mask.isClosed)
    #expect(throws: MaskError.closed) { try mask.set([.readable]) }
    #expect(throws: MaskError.closed) { try mask.update(inserting: .readable) }
    #expect(throws: MaskError.closed) { try mask.get() }
    #expect(throws: MaskError.closed) { try mask.readBack() }
    #expect(throws: MaskError.closed) { try mask.resignal() }
    #expect(throws: MaskError.closed) { try mask.close() }
  }

  static func emfile(_ layout: MaskLayout) throws {
    let name: String
    switch layout {
    case .kernel: name = "kernel"
    case .module: name = "module"
    case .emulation(let e): name = e.rawValue
    }
    let (status, values) = try runHelper(["emfile", name])
    #expect(status == 0, "helper output \(values)")
    #expect(values["limit"] == "true", "the error is recognised as EMFILE: \(values)")
    #expect(values["others_ok"] == "true", "earlier mask fds keep working")
    #expect(values["message"]?.contains("EMFILE") == true)
    #expect(Int(values["created"] ?? "") ?? 0 > 0)
  }

  static func descriptorOptions(_ layout: MaskLayout) throws {
    let plain = try makeMask(layout)
    defer { try? plain.close() }
    #expect(fcntl(plain.fileDescriptor, F_GETFD) & FD_CLOEXEC != 0, "close-on-exec by default")
    #expect(fcntl(plain.fileDescriptor, F_GETFL) & O_NONBLOCK == 0)
    let custom = try makeMask(layout, options: [.nonBlocking])
    defer { try? custom.close() }
    #expect(fcntl(custom.fileDescriptor, F_GETFD) & FD_CLOEXEC == 0)
    #expect(fcntl(custom.fileDescriptor, F_GETFL) & O_NONBLOCK != 0)
  }

  @Test("invalid event bits are refused and change nothing", arguments: emulationLayouts)
  func invalid(layout: MaskLayout) throws { try BadInputTests.invalidBits(layout) }

  @Test("use after close is a clear error", arguments: emulationLayouts)
  func afterClose(layout: MaskLayout) throws { try BadInputTests.useAfterClose(layout) }

  @Test("EMFILE in a child with a low RLIMIT_NOFILE is a clear error", arguments: emulationLayouts)
  func tooManyFiles(layout: MaskLayout) throws { try BadInputTests.emfile(layout) }

  @Test("close-on-exec by default; options honoured", arguments: emulationLayouts)
  func options(layout: MaskLayout) throws { try BadInputTests.descriptorOptions(layout) }

  @Test("validating initialiser names the stray bits")
  func validating() throws {
    #expect(throws: MaskError.invalidEvents(0x40)) { try MaskEvents(validating: 0x41) }
    #expect(try MaskEvents(validating: 0x1f) == .all)
  }

  @Test("a failed syscall mid-transition leaves get() truthful", arguments: EmulationLayout.allCases)
  func injectedFailure(layout: EmulationLayout) throws {
    let mask = try MaskFD(backend: .emulation(layout))
    defer { try? mask.close() }
    try mask.set([.writable], data: 1)
    Sys.withInjectedFault("send", errno: ENOBUFS) {
      #expect(throws: MaskError.system(operation: "send", errno: ENOBUFS)) {
        try mask.set([.readable, .writable], data: 2)
      }
    }
    let state = try mask.get()
    #expect(state == MaskState(events: [.writable], data: 1), "the readable bit was not set, the data was put back")
    #expect(try mask.readBack() == state)
    try mask.set([.readable, .writable], data: 2)
    #expect(try mask.readBack() == MaskState(events: [.readable, .writable], data: 2))
  }

  @Test(
    "the kernel backend, requested explicitly where it is missing, says why",
    .enabled(if: !KernelProbe.current.isAvailable, "this kernel has EFD_MASK, so the request succeeds"))
  func kernelRequestedWhereMissing() throws {
    do {
      _ = try MaskFD(backend: .kernel)
      Issue.record("creating a kernel mask fd must fail here")
    } catch {
      #expect(error == .backendUnavailable(.kernel, reason: KernelProbe.current.reason))
    }
  }
}
