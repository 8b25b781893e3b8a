/// Which kernel mechanism a mask fd uses.
public enum MaskBackendKind: String, Hashable, Sendable, CustomStringConvertible {
  /// eventfd2 with EFD_MASK: one fd, every combination, exactly.
  case kernel
  /// The efd_mask kernel module's `/dev/efd_mask`: one fd, every
  /// combination, exactly, on a stock kernel with the module loaded.
  case module
  /// Stock-kernel AF_UNIX datagram sockets.
  case emulation

  /// The raw value: `kernel`, `module` or `emulation`.
  public var description: String { rawValue }
}

/// How the emulation is laid out. Each layout trades fds for fidelity.
public enum EmulationLayout: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
  /// Two fds. Readable and writable fully independent (including neither);
  /// error and hang-up only together with writable, as a TCP socket reports
  /// them. The default for protocol sockets.
  case pair
  /// Three fds. Adds error without writable, so error and priority combine
  /// freely with readable and writable (18 combinations).
  case full

  /// The raw value: `pair` or `full`.
  public var description: String { rawValue }

  /// Descriptors one mask fd costs in this layout.
  public var descriptorCount: Int {
    switch self {
    case .pair: 2
    case .full: 3
    }
  }
}

/// A concrete mechanism: the kernel flag, or one emulation layout.
public enum MaskLayout: Hashable, Sendable, CustomStringConvertible {
  /// eventfd2(EFD_MASK) of a patched kernel.
  case kernel
  /// An fd from the efd_mask module's `/dev/efd_mask`.
  case module
  /// The AF_UNIX emulation in one of its layouts.
  case emulation(EmulationLayout)

  /// Every mechanism, in table order.
  public static let all: [MaskLayout] = [.kernel, .module, .emulation(.pair), .emulation(.full)]

  /// The kind of mechanism; both emulation layouts are ``MaskBackendKind/emulation``.
  public var backend: MaskBackendKind {
    switch self {
    case .kernel: .kernel
    case .module: .module
    case .emulation: .emulation
    }
  }

  /// Descriptors one mask fd costs.
  public var descriptorCount: Int {
    switch self {
    case .kernel, .module: 1
    case .emulation(let layout): layout.descriptorCount
    }
  }

  /// `kernel`, `module`, `emulation(pair)` or `emulation(full)`.
  public var description: String {
    switch self {
    case .kernel: "kernel"
    case .module: "module"
    case .emulation(let layout): "emulation(\(layout))"
    }
  }

  /// How exactly this mechanism shows `events`.
  public func fidelity(_ events: MaskEvents) -> MaskFidelity {
    if unsupportedReason(events) != nil { return .unsupported }
    if case .emulation = self, events.contains(.hangup) { return .terminal }
    return .exact
  }

  /// Why `events` cannot be shown, or nil when it can.
  public func unsupportedReason(_ events: MaskEvents) -> String? {
    guard case .emulation(let layout) = self else { return nil }
    if events.contains(.priority) && !events.contains(.error) {
      return "the emulation shows POLLPRI only together with POLLERR (supported: \(supportedSummary))"
    }
    if events.contains(.hangup) && !events.contains(.readable) {
      return "the emulation shows POLLHUP only together with POLLIN (supported: \(supportedSummary))"
    }
    if layout == .pair, !events.isDisjoint(with: [.error, .hangup]), !events.contains(.writable) {
      return
        "the pair layout shows POLLERR and POLLHUP only together with POLLOUT, as a TCP socket does; the full layout (3 fds) shows them without it (supported: \(supportedSummary))"
    }
    return nil
  }

  /// The combinations this mechanism shows, for error messages.
  public var supportedSummary: String {
    switch self {
    case .kernel, .module:
      "all 32 combinations"
    case .emulation(.pair):
      "any mix of POLLIN and POLLOUT; POLLERR (with optional POLLPRI) and POLLHUP (with POLLIN) together with POLLOUT; POLLHUP is terminal"
    case .emulation(.full):
      "any mix of POLLIN, POLLOUT and POLLERR, with POLLPRI only alongside POLLERR; POLLHUP only with POLLIN, and terminal"
    }
  }

  /// The combinations this mechanism shows exactly or terminally.
  public var supportedCombinations: [MaskEvents] {
    MaskEvents.allCombinations.filter { fidelity($0) != .unsupported }
  }
}

/// How exactly a mechanism shows one combination of events.
public enum MaskFidelity: String, Hashable, Sendable {
  /// Shown exactly, and reversible: any other supported state can follow.
  case exact
  /// Shown exactly, but one-way: once set, POLLHUP cannot be cleared.
  case terminal
  /// Not shown: setting it throws ``MaskError/unsupported(_:backend:reason:)``.
  case unsupported
}

/// The fidelity of every combination on every mechanism.
public enum FidelityTable {
  /// A Markdown table: 32 rows, one column per mechanism.
  public static func markdown() -> String {
    var lines = [
      "| events | " + MaskLayout.all.map { "\($0) (\($0.descriptorCount) fd)" }.joined(separator: " | ") + " |"
    ]
    lines.append("|---|" + MaskLayout.all.map { _ in "---" }.joined(separator: "|") + "|")
    for events in MaskEvents.allCombinations {
      let cells = MaskLayout.all.map { $0.fidelity(events).rawValue }
      lines.append("| \(events) | " + cells.joined(separator: " | ") + " |")
    }
    let totals = MaskLayout.all.map { layout in
      let exact = MaskEvents.allCombinations.filter { layout.fidelity($0) == .exact }.count
      let terminal = MaskEvents.allCombinations.filter { layout.fidelity($0) == .terminal }.count
      return "\(exact) exact + \(terminal) terminal"
    }
    lines.append("| **total** | " + totals.joined(separator: " | ") + " |")
    return lines.joined(separator: "\n")
  }
}
