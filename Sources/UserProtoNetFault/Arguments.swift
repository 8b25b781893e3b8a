import UserProto

/// A role's `--name value` options (and `--name` switches), checked against
/// the names it takes: anything else is a usage error.
struct Arguments {
  private var values: [String: String] = [:]
  private var switches: Set<String> = []

  init(_ arguments: ArraySlice<String>, options: Set<String>, switches known: Set<String> = []) {
    var index = arguments.startIndex
    while index < arguments.endIndex {
      let argument = arguments[index]
      guard argument.hasPrefix("--") else { failUsage("unexpected argument \(argument)") }
      let name = String(argument.dropFirst(2))
      if known.contains(name) {
        switches.insert(name)
        index += 1
        continue
      }
      guard options.contains(name) else { failUsage("unknown option \(argument)") }
      guard index + 1 < arguments.endIndex else { failUsage("\(argument) needs a value") }
      values[name] = arguments[index + 1]
      index += 2
    }
  }

  /// The socket options every role that makes a socket takes.
  static let socketOptions: Set<String> = ["send-hwm", "recv-hwm", "keepalive"]

  func string(_ name: String) -> String? { values[name] }

  func required(_ name: String) -> String {
    guard let value = values[name] else { failUsage("--\(name) is required") }
    return value
  }

  func int(_ name: String, default value: Int, in range: ClosedRange<Int> = 0...Int(Int32.max)) -> Int {
    guard let text = values[name] else { return value }
    guard let number = Int(text), range.contains(number) else {
      failUsage("--\(name) must be a number from \(range.lowerBound) to \(range.upperBound), not \(text)")
    }
    return number
  }

  func isSet(_ name: String) -> Bool { switches.contains(name) }

  /// `SocketOptions` from --send-hwm, --recv-hwm and --keepalive.
  func socketOptions() -> SocketOptions {
    var options = SocketOptions()
    let send = int("send-hwm", default: options.sendHighWatermark, in: 1024...(1 << 30))
    let receive = int("recv-hwm", default: options.receiveHighWatermark, in: 1024...(1 << 30))
    options = SocketOptions(
      receiveHighWatermark: receive, receiveLowWatermark: receive / 4,
      sendHighWatermark: send, sendLowWatermark: send / 4)
    if let text = values["keepalive"] {
      let parts = text.split(separator: ",").compactMap { Int($0) }
      guard parts.count == 3, parts.allSatisfy({ $0 >= 1 }) else {
        failUsage("--keepalive takes IDLE_S,INTERVAL_S,PROBES (whole numbers from 1), not \(text)")
      }
      options.tcpKeepAlive = TCPKeepAlive(idle: .seconds(parts[0]), interval: .seconds(parts[1]), probes: parts[2])
    }
    return options
  }
}
