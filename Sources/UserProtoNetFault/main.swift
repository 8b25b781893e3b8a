// userproto-netfault: the two ends of the fault scenarios scripts/faults.sh
// runs in two network namespaces (docs/reliability.md, "Faults"). Each role
// runs one socket and prints one JSON line at the end: what it accepted,
// delivered and dropped (by cause), its fds before and after, its CPU, and
// the CPU it used while it waited.
//
//   userproto-netfault send|recv|udp-send|udp-recv|hold [--option value]...
import Glibc

func runRole(_ arguments: [String]) -> Int32 {
  guard arguments.count >= 2 else { failUsage("no role given") }
  let rest = arguments[2...]
  do {
    switch arguments[1] {
    case "send": return try SendRole.run(Arguments(rest, options: SendRole.options), datagram: false)
    case "udp-send":
      return try SendRole.run(Arguments(rest, options: SendRole.options.subtracting(["proto"])), datagram: true)
    case "recv":
      return try ReceiveRole.run(
        Arguments(rest, options: ReceiveRole.options, switches: ReceiveRole.switches), datagram: false)
    case "udp-recv":
      return try ReceiveRole.run(
        Arguments(rest, options: ReceiveRole.options.subtracting(["proto"]), switches: ReceiveRole.switches),
        datagram: true)
    case "hold": return HoldRole.run(Arguments(rest, options: HoldRole.options))
    case "-h", "--help", "help":
      print(usage)
      return 0
    default: failUsage("unknown role \(arguments[1])")
    }
  } catch {
    // The loop could not be made (EMFILE...).
    var json = JSONLine()
    json.add("role", arguments[1])
    json.add("error", "\(error)")
    json.add("exit", 1)
    json.emit()
    return 1
  }
}

exit(runRole(CommandLine.arguments))
