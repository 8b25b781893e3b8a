import ExampleProtocols
import Glibc
import Synchronization
import Testing
import UserProto

// Helpers for the tests of the SP handlers on the pipe sockets.

/// The next message on `socket` within `timeout` (nil if none came).
/// - Throws: the socket's pending error.
func nextSPMessage<H>(_ socket: Socket<H>, within timeout: Duration = .seconds(10)) async throws -> [UInt8]? {
  var message: [UInt8]?
  _ = try await waitUntil(timeout, every: .milliseconds(2)) {
    if case .message(let m) = try socket.tryReceive() { message = m }
    return message != nil
  }
  return message
}

func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }
func string(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

/// Sends `text` on a REQ socket and returns the reply as text (nil if none
/// came within `timeout`).
func request(_ req: Req0Socket, _ text: String, within timeout: Duration = .seconds(10)) async throws -> String? {
  try await req.send(utf8(text))
  return string(try await nextSPMessage(req, within: timeout))
}

/// What a test REP server does, shared with the test.
final class ServerControl: Sendable {
  let name: String
  /// Requests answered.
  let served = Atomic<Int>(0)
  /// While true, requests are received and never answered.
  let stalled = Atomic<Bool>(false)
  /// Requests received while stalled.
  let swallowed = Atomic<Int>(0)
  init(_ name: String) { self.name = name }
}

/// Serves `rep` from a task: each request is answered with
/// "NAME: BODY", in order, until the socket closes.
@discardableResult
func serve(_ rep: Rep0Socket, _ control: ServerControl) -> Task<Void, Never> {
  Task {
    do {
      for try await request in rep.messages {
        if control.stalled.load(ordering: .relaxed) {
          control.swallowed.add(1, ordering: .relaxed)
          continue
        }
        // Counted before the reply goes out, so a requester that has its
        // reply always sees the count that includes it.
        control.served.add(1, ordering: .relaxed)
        try await rep.send(utf8("\(control.name): ") + request)
      }
    } catch {}
  }
}

/// Pipes of `socket` whose SP handshake completed.
func readyPipes(_ socket: Req0Socket) async -> Int {
  (try? await socket.withHandler { h, _ in h.pipes.ready.count }) ?? -1
}

/// The tcp:// URL to dial for a socket listening on `bound`.
func dialURL(_ bound: TransportURL) throws -> String {
  guard case .tcp(let address) = bound, let port = address.port else { return bound.description }
  return "tcp://127.0.0.1:\(port)"
}

/// A fresh ipc:// path in /tmp.
func freshIPCPath(_ tag: String) -> String {
  let path = "/tmp/userproto-sp-\(getpid())-\(tag)-\(UInt32.random(in: 0...UInt32.max)).sock"
  unlink(path)
  return path
}

/// A loop for one test (epoll: these tests are about the protocol).
func withSPLoop<T>(_ body: (EventLoop) async throws -> T) async throws -> T {
  try await withLoop(.epoll, body)
}

/// ``waitUntil(_:every:_:)`` with a condition that awaits (a handler query).
func waitUntilAsync(
  _ timeout: Duration, every interval: Duration = .milliseconds(5), _ condition: () async throws -> Bool
) async rethrows -> Bool {
  let deadline = ContinuousClock.now + timeout
  while true {
    if try await condition() { return true }
    if ContinuousClock.now >= deadline { return false }
    try? await Task.sleep(for: interval)
  }
}
