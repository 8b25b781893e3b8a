import Glibc

/// One JSON object on one line, built field by field in order: every role
/// prints one at the end (and the listening roles one when they listen),
/// which scripts/faults.sh reads with jq.
struct JSONLine {
  private var fields: [String] = []

  mutating func add(_ key: String, _ value: Int) { fields.append("\(quoted(key)):\(value)") }
  mutating func add(_ key: String, _ value: String) { fields.append("\(quoted(key)):\(quoted(value))") }
  mutating func add(_ key: String, _ value: Bool) { fields.append("\(quoted(key)):\(value ? "true" : "false")") }

  /// A nested object of counts (`"dropped":{"cause":n,...}`).
  mutating func add(_ key: String, counts: Counts) {
    let inner = counts.map { "\(quoted($0.name)):\($0.value)" }.joined(separator: ",")
    fields.append("\(quoted(key)):{\(inner)}")
  }

  var text: String { "{" + fields.joined(separator: ",") + "}" }

  /// Prints the line and flushes it (the script may be waiting for it).
  func emit() {
    print(text)
    fflush(nil)
  }

  private func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\t": out += "\\t"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }
}

/// Named counts, in the order they are printed.
typealias Counts = [(name: String, value: Int)]

/// Exits with status 2 after a usage error, on stderr.
func failUsage(_ message: String) -> Never {
  writeError("userproto-netfault: \(message)\n\(usage)")
  exit(2)
}

/// Writes `text` and a newline to stderr.
func writeError(_ text: String) {
  let line = text + "\n"
  _ = line.withCString { write(2, $0, strlen($0)) }
}

let usage = """
  usage: userproto-netfault ROLE [--option value]...
    send      --proto push|pub|req|pair --dial URL [--count N] [--size B] [--rate PER_S] [--seconds S]
              [--progress FILE] [--drain-seconds S] [--linger-ms MS] [--connect-seconds S]
              [--stop-after-pipe-loss-ms MS] [--reply-timeout-ms MS] [--resend-ms MS] [SOCKET OPTIONS]
    recv      --proto pull|sub|rep|pair --listen URL [--expect N] [--until-sequence K] [--settle-ms MS]
              [--seconds S] [--stall-ms MS] [--idle-exit-ms MS] [--no-pipe-exit-ms MS] [--idle-ms MS]
              [--until-no-pipes] [--progress FILE] [SOCKET OPTIONS]
    udp-send  --dial udp://HOST:PORT [--count N] [--size B] [--rate PER_S] [--seconds S] [--drain-seconds S]
    udp-recv  --listen udp://HOST:PORT [--expect N] [--settle-ms MS] [--seconds S] [--idle-exit-ms MS]
              [--idle-ms MS] [--progress FILE] [SOCKET OPTIONS]
    hold      --dial tcp://HOST:PORT --connections N --hold-ms MS
  SOCKET OPTIONS: --send-hwm BYTES --recv-hwm BYTES --keepalive IDLE_S,INTERVAL_S,PROBES
  Each role prints one JSON line at the end (docs/reliability.md, "Faults").
  """
