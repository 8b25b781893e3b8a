import BenchSupport
import Glibc
import Synchronization
import UserProto

// UDP request/reply: one 64-byte datagram in flight, a blocking client
// thread against (1) a blocking raw UDP echo thread, the floor, and (2) a
// ProtocolListener.udp echo answering on the loop (io_uring and epoll), in
// the same process and the same run, rounds alternating.
// Usage: UDPBench [--quick]

let options = BenchArguments()
let rounds = options.quick ? 3 : 5
let count = options.quick ? 5_000 : 20_000
let warmup = 500

func udpSocket(bindingPort port: UInt16 = 0) -> (Int32, SocketAddress) {
  let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  precondition(fd >= 0, "socket: \(errno)")
  let any = try! SocketAddress(ipv4: "127.0.0.1", port: port)
  precondition(any.withSockaddr { bind(fd, $0, $1) } == 0, "bind: \(errno)")
  var storage = sockaddr_storage()
  var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
  _ = withUnsafeMutablePointer(to: &storage) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
  }
  let address = withUnsafePointer(to: &storage) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try! SocketAddress(sockaddr: $0, length: length) }
  }
  return (fd, address)
}

/// Round trips of a blocking client connected to `server`: nanoseconds each.
func measure(_ server: SocketAddress) -> Samples {
  let (fd, _) = udpSocket()
  defer { close(fd) }
  precondition(server.withSockaddr { connect(fd, $0, $1) } == 0, "connect: \(errno)")
  var timeout = timeval(tv_sec: 2, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  var message = [UInt8](repeating: 7, count: 64)
  var reply = [UInt8](repeating: 0, count: 2048)
  var samples = Samples(reserving: count)
  for i in 0..<(warmup + count) {
    let start = nowNanoseconds()
    precondition(send(fd, &message, message.count, 0) == message.count, "send: \(errno)")
    let n = recv(fd, &reply, reply.count, 0)
    precondition(n == message.count, "recv: \(n) errno \(errno) (a lost datagram: rerun)")
    if i >= warmup { samples.add(nowNanoseconds() - start) }
  }
  return samples
}

/// The floor: a thread echoing each datagram with recvfrom/sendto.
final class RawEcho: @unchecked Sendable {
  let fd: Int32
  let address: SocketAddress
  private var thread = pthread_t()
  init() {
    (fd, address) = udpSocket()
    let box = Unmanaged.passRetained(self).toOpaque()
    pthread_create(
      &thread, nil,
      { raw in
        let echo = Unmanaged<RawEcho>.fromOpaque(raw!).takeRetainedValue()
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
          var from = sockaddr_storage()
          var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
          let n = withUnsafeMutablePointer(to: &from) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
              recvfrom(echo.fd, &buffer, buffer.count, 0, $0, &length)
            }
          }
          if n <= 0 { return nil }  // shut down
          _ = withUnsafePointer(to: &from) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(echo.fd, &buffer, n, 0, $0, length) }
          }
        }
      }, box)
  }
  func stop() {
    shutdown(fd, Int32(SHUT_RDWR))
    pthread_join(thread, nil)
    close(fd)
  }
}

print("UDPBench: " + machineSummary())
print("\(rounds) rounds x \(count) round trips of 64 B (after \(warmup) warm-up), one datagram in flight\n")
let raw = RawEcho()
/// The peers' sockets: with `queuesConnections: false` the configure
/// closure owns them.
let peers = Mutex<[ProtocolSocket]>([])
var loops: [(String, EventLoop, ProtocolListener<ProtocolSocket>)] = []
for (name, backend) in [("io_uring", EventLoop.BackendChoice.ioUring), ("epoll", .epoll)] {
  let loop = try EventLoop(configuration: .init(backend: backend))
  let listener = try ProtocolListener<ProtocolSocket>.udp(
    on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, queuesConnections: false
  ) { socket in
    peers.withLock { $0.append(socket) }
    socket.handleMessagesOnLoop { socket, message in _ = try? socket.trySend(message) }
  }
  loops.append((name, loop, listener))
}
var p50: [String: [Double]] = [:]
var p99: [String: [Double]] = [:]
for _ in 0..<rounds {
  let floor = measure(raw.address).p50p99
  p50["raw", default: []].append(floor.0)
  p99["raw", default: []].append(floor.1)
  for (name, _, listener) in loops {
    let (a, b) = measure(listener.localAddress).p50p99
    p50[name, default: []].append(a)
    p99[name, default: []].append(b)
    p50[name + "/raw", default: []].append(a / floor.0)
    p99[name + "/raw", default: []].append(b / floor.1)
  }
}
raw.stop()
var rows: [[String]] = [
  ["raw blocking recvfrom/sendto thread", "1.00x", "1.00x", us(median(p50["raw"]!)), us(median(p99["raw"]!))]
]
for (name, loop, listener) in loops {
  rows.append([
    "ProtocolListener.udp, \(name) loop (dropped \(listener.droppedDatagrams))",
    ratio(median(p50[name + "/raw"]!)), ratio(median(p99[name + "/raw"]!)),
    us(median(p50[name]!)), us(median(p99[name]!)),
  ])
  try listener.close()
  loop.shutdownAndWait()
}
printTable(["server", "p50 vs raw (median of rounds)", "p99 vs raw", "p50 us", "p99 us"], rows)
