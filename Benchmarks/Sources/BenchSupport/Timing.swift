import Glibc

/// The monotonic clock in nanoseconds.
@inline(__always) public func nowNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The median of `values` (the upper one for an even count); 0 when empty.
public func median(_ values: [Double]) -> Double {
  guard !values.isEmpty else { return 0 }
  let sorted = values.sorted()
  return sorted[sorted.count / 2]
}

/// The `p` quantile (0...1) of `values`, nearest rank; 0 when empty.
public func percentile(_ values: [Double], _ p: Double) -> Double {
  guard !values.isEmpty else { return 0 }
  let sorted = values.sorted()
  return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Latency samples in nanoseconds, with their quantiles.
public struct Samples: Sendable {
  public var values: [Double] = []
  public init() {}
  public init(reserving count: Int) { values.reserveCapacity(count) }
  public mutating func add(_ ns: UInt64) { values.append(Double(ns)) }
  public mutating func add(_ ns: Double) { values.append(ns) }
  /// p50 and p99 in one sort.
  public var p50p99: (Double, Double) {
    guard !values.isEmpty else { return (0, 0) }
    let sorted = values.sorted()
    return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))])
  }
}

/// Formats nanoseconds as microseconds with `digits` decimals.
public func us(_ ns: Double, digits: Int = 1) -> String { fixed(ns / 1000, digits) }

/// A fixed-point decimal string (no Foundation).
public func fixed(_ x: Double, _ digits: Int) -> String {
  if !x.isFinite { return "-" }
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let scaled = Int((abs(x) * scale).rounded())
  let whole = scaled / Int(scale)
  var text = (x < 0 && scaled != 0 ? "-" : "") + String(whole)
  if digits > 0 {
    let fraction = String(scaled % Int(scale))
    text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
  }
  return text
}

/// A ratio like `1.23x`.
public func ratio(_ x: Double) -> String { x.isFinite && x > 0 ? fixed(x, 2) + "x" : "-" }

/// A count per second with a k/M suffix.
public func rate(_ perSecond: Double) -> String {
  if perSecond >= 1_000_000 { return fixed(perSecond / 1_000_000, 2) + "M" }
  if perSecond >= 1000 { return fixed(perSecond / 1000, 1) + "k" }
  return fixed(perSecond, 0)
}

/// Prints a Markdown table.
public func printTable(_ header: [String], _ rows: [[String]]) {
  print("| " + header.joined(separator: " | ") + " |")
  print("|" + header.map { _ in "---" }.joined(separator: "|") + "|")
  for row in rows { print("| " + row.joined(separator: " | ") + " |") }
  print("")
}

/// The kernel release and CPU count, for the header of every report.
public func machineSummary() -> String {
  var uts = utsname()
  uname(&uts)
  func field<T>(_ value: T) -> String {
    withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
  }
  return
    "\(field(uts.sysname)) \(field(uts.release)) \(field(uts.machine)), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs, "
    + "load average at start \(loadAverage())"
}

/// Command-line flags: `--quick`, `--rounds N`, `--seconds S`.
public struct BenchArguments: Sendable {
  public let quick: Bool
  public let arguments: [String]
  public init() {
    arguments = CommandLine.arguments
    quick = arguments.contains("--quick")
  }
  public func int(_ name: String, default value: Int) -> Int {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let v = Int(arguments[i + 1]) else {
      return value
    }
    return v
  }
  public func double(_ name: String, default value: Double) -> Double {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let v = Double(arguments[i + 1]) else {
      return value
    }
    return v
  }
  public func string(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
  }
}

/// The 1-minute load average (other work on the machine skews every number).
public func loadAverage() -> String {
  guard let file = fopen("/proc/loadavg", "r") else { return "?" }
  defer { fclose(file) }
  var one: Double = 0
  guard withUnsafeMutablePointer(to: &one, { fscanfDouble(file, $0) }) else { return "?" }
  return fixed(one, 2)
}

private func fscanfDouble(_ file: UnsafeMutablePointer<FILE>, _ out: UnsafeMutablePointer<Double>) -> Bool {
  var buffer = [CChar](repeating: 0, count: 64)
  guard fgets(&buffer, 64, file) != nil else { return false }
  let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  guard let first = text.split(separator: " ").first, let value = Double(first) else { return false }
  out.pointee = value
  return true
}
