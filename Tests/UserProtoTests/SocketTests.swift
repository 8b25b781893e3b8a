import CUserProtoShim
import Dispatch
import Glibc
import PropertyBased
import Synchronization
import Testing

@testable import UserProto

func pollEvents(_ fd: Int32) -> MaskEvents {
  var entry = pollfd(fd: fd, events: Int16(MaskEvents.all.rawValue), revents: 0)
  _ = poll(&entry, 1, 0)
  return MaskEvents(rawValue: UInt32(UInt16(bitPattern: entry.revents)) & MaskEvents.all.rawValue)
}

/// A connected pair over TCP loopback: `a` is a FramedSocket from a listener,
/// `b` the client.
func tcpPair(_ loop: EventLoop, options: SocketOptions = SocketOptions()) throws -> (FramedSocket, FramedSocket) {
  let listener = try ProtocolListener<FramedSocket>(
    on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, options: options)
  defer { try? listener.close() }
  let b = try FramedSocket.connect(to: listener.localAddress, loop: loop, options: options)
  var a: FramedSocket?
  #expect(
    eventually {
      a = try? listener.tryAccept(); return a != nil
    })
  #expect(eventually { b.connectionState == .connected })
  return (try #require(a), b)
}

enum Transport: String, CaseIterable, Sendable { case memory, tcp }

func socketPair(_ transport: Transport, _ loop: EventLoop, options: SocketOptions = SocketOptions()) throws
  -> (FramedSocket, FramedSocket)
{
  switch transport {
  case .memory: try makeSocketPair(FramedSocket.self, loop: loop, options: options)
  case .tcp: try tcpPair(loop, options: options)
  }
}

/// A model of socket `a`'s buffers, from which the test derives the
/// readiness `a` must show, independently of the library.
struct Model {
  var queued: [[UInt8]] = []
  var peerFinished = false
  var writeShut = false
  var expected: MaskEvents {
    var e: MaskEvents = []
    if !queued.isEmpty || peerFinished { e.insert(.readable) }
    e.insert(.writable)  // small messages never reach the high watermark here
    if peerFinished && writeShut { e.insert(.hangup) }
    return e
  }
}

enum Step: CaseIterable, Sendable {
  case send, receive, peerSend, peerReceive, peerShutdown, shutdown
}

@Suite("Protocol sockets")
struct SocketTests {
  @Test(
    "property: the fd's readiness always equals the readiness derived from the buffers",
    arguments: loopBackends, Transport.allCases)
  func readinessProperty(backend: EventLoop.BackendChoice, transport: Transport) async throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    await propertyCheck(count: 25, input: Gen<Step>.case.array(of: 1...30)) { steps in
      SocketTests.run(steps, transport: transport, loop: loop)
    }
  }

  /// Applies `steps` to a fresh pair and checks the fd after every step.
  static func run(_ steps: [Step], transport: Transport, loop: EventLoop) {
    do {
      let (a, b) = try socketPair(transport, loop)
      defer {
        a.abort()
        b.abort()
      }
      var model = Model()
      var peerShut = false
      for (i, step) in steps.enumerated() {
        switch step {
        case .send:
          if model.writeShut {
            #expect(throws: SocketError.writeShutdown) { try a.trySend([1]) }
          } else {
            #expect(try a.trySend([UInt8(i)]))
          }
        case .receive:
          let result = try a.tryReceive()
          if model.queued.isEmpty {
            #expect(result == (model.peerFinished ? .endOfStream : .wouldBlock))
          } else {
            #expect(result == .message(model.queued.removeFirst()))
          }
        case .peerSend:
          if !peerShut {
            let message = [UInt8(i), 7]
            #expect(try b.trySend(message))
            model.queued.append(message)
          }
        case .peerReceive:
          _ = try? b.tryReceive()
        case .peerShutdown:
          if !peerShut {
            try b.shutdownWrite()
            peerShut = true
            model.peerFinished = true
          }
        case .shutdown:
          if !model.writeShut {
            try a.shutdownWrite()
            model.writeShut = true
          }
        }
        // Deliveries are asynchronous: wait until the socket's queue holds
        // what the peer sent; then the fd must show exactly the model.
        let expected = model.expected
        let count = model.queued.count
        let finished = model.peerFinished
        let settled = eventually(5) {
          a.state.withLock { $0.queuedMessages == count && $0.peerFinished == finished }
        }
        #expect(settled, "step \(i) \(step): queue did not settle")
        #expect(a.readiness == expected, "step \(i) \(step): derived readiness")
        // The loop thread writes the fd right after it releases the state
        // lock: allow it that moment, then the fd must show exactly the model.
        _ = eventually(1) { pollEvents(a.fileDescriptor) == expected }
        #expect(pollEvents(a.fileDescriptor) == expected, "step \(i) \(step): \(steps)")
      }
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }

  @Test("send watermarks: not writable at the high mark, writable again at the low mark", arguments: loopBackends)
  func sendWatermarks(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(
      receiveHighWatermark: 16 * 1024, receiveLowWatermark: 4 * 1024, sendHighWatermark: 64 * 1024,
      sendLowWatermark: 16 * 1024)
    let (a, b) = try tcpPair(loop, options: options)
    defer {
      a.abort()
      b.abort()
    }
    // b does not read: a's queue fills through the kernel buffers to its mark.
    let chunk = [UInt8](repeating: 0x61, count: 8 * 1024)
    var sent = 0
    let deadline = EventLoop.now() + 10_000_000_000
    while EventLoop.now() < deadline {
      if try a.trySend(chunk) {
        sent += 1
      } else if a.state.withLock({ $0.transmitBytes >= options.sendHighWatermark }) {
        break
      } else {
        usleep(1000)
      }
    }
    #expect(!pollEvents(a.fileDescriptor).contains(.writable), "full: not writable")
    #expect(try a.trySend(chunk) == false, "a send would block")
    // b drains everything: a becomes writable again.
    var received = 0
    #expect(
      eventually {
        while case .message = (try? b.tryReceive()) ?? .wouldBlock { received += 1 }
        return pollEvents(a.fileDescriptor).contains(.writable)
      })
    #expect(
      eventually {
        while case .message = (try? b.tryReceive()) ?? .wouldBlock { received += 1 }
        return received == sent
      })
  }

  @Test("receive backpressure: a flooding peer cannot grow memory without bound", arguments: loopBackends)
  func receiveBackpressure(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let options = SocketOptions(receiveHighWatermark: 32 * 1024, receiveLowWatermark: 8 * 1024)
    let listener = try ProtocolListener<FramedSocket>(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop, options: options)
    defer { try? listener.close() }
    // The peer is a raw kernel socket that writes frames as fast as it can.
    let peer = tcpSocket()
    defer { close(peer) }
    _ = listener.localAddress.withSockaddr { connect(peer, $0, $1) }
    var a: FramedSocket?
    #expect(
      eventually {
        a = try? listener.tryAccept(); return a != nil
      })
    let socket = try #require(a)
    defer { socket.abort() }
    let message = frame([UInt8](repeating: 1, count: 4092))
    var written = 0
    let deadline = EventLoop.now() + 1_000_000_000
    var offset = 0  // within the current frame: frames are written whole
    while EventLoop.now() < deadline || offset != 0 {
      let n = message.withUnsafeBytes {
        send(peer, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
      }
      if n > 0 {
        written += n
        offset = (offset + n) % message.count
      } else {
        usleep(1000)
        if EventLoop.now() > deadline + 5_000_000_000 { break }
      }
    }
    let queued = socket.state.withLock { $0.receiveBytes }
    // What the kernel may hold on the way in (the socket's receive buffer
    // autotunes up to tcp_rmem's maximum) bounds what arrives after a pause.
    let rmemMax =
      Int(readFile("/proc/sys/net/ipv4/tcp_rmem").split(separator: "\t").last.map { $0.filter(\.isNumber) } ?? "") ?? 6
      << 20
    #expect(queued <= options.receiveHighWatermark + rmemMax, "queued \(queued) bytes")
    #expect(socket.state.withLock { $0.readingPaused }, "reading paused at the high watermark")
    #expect(written < 64 << 20, "the peer was held back by TCP flow control (wrote \(written) bytes in 1 s)")
    // Draining resumes reading, and every byte the peer wrote arrives.
    var got = 0
    #expect(
      eventually(20) {
        while case .message(let m) = (try? socket.tryReceive()) ?? .wouldBlock { got += m.count + 4 }
        return got >= written - written % message.count  // the last frame may be cut short
      },
      "got \(got) of \(written); state \(socket.connectionState), paused \(socket.state.withLock { $0.readingPaused })")
  }

  @Test("many threads send while another receives; per-sender order holds", arguments: loopBackends, Transport.allCases)
  func crossThread(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try socketPair(transport, loop)
    defer {
      a.abort()
      b.abort()
    }
    let senders = 4
    let perSender = 500
    let receiver = Thread {
      var last = [Int](repeating: -1, count: senders)
      var count = 0
      var ordered = true
      let deadline = EventLoop.now() + 30_000_000_000
      while count < senders * perSender && EventLoop.now() < deadline {
        var entry = pollfd(fd: b.fileDescriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, 100)
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock {
          let sender = Int(m[0])
          let index = Int(m[1]) << 8 | Int(m[2])
          if index != last[sender] + 1 { ordered = false }
          last[sender] = index
          count += 1
        }
      }
      return (count, ordered)
    }
    DispatchQueue.concurrentPerform(iterations: senders) { s in
      for i in 0..<perSender {
        let message = [UInt8(s), UInt8(i >> 8), UInt8(i & 0xff)]
        while (try? a.trySend(message)) != true { usleep(100) }
      }
    }
    let (count, ordered) = receiver.join()
    #expect(count == senders * perSender)
    #expect(ordered)
  }

  @Test("a listener's fd is readable exactly while a connection waits", arguments: loopBackends)
  func listenerReadiness(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let listener = try ProtocolListener<FramedSocket>(on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    defer { try? listener.close() }
    #expect(pollEvents(listener.fileDescriptor) == [])
    let client = try FramedSocket.connect(to: listener.localAddress, loop: loop)
    defer { client.abort() }
    #expect(eventually { pollEvents(listener.fileDescriptor) == [.readable] })
    let accepted = try #require(try listener.tryAccept())
    defer { accepted.abort() }
    #expect(pollEvents(listener.fileDescriptor) == [])
    #expect(try listener.tryAccept() == nil)
  }

  @Test("async send, receive and the messages sequence", arguments: loopBackends)
  func asyncAPI(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeLoop(backend)
    let (a, b) = try tcpPair(loop)
    let count = 200
    let producer = Task {
      for i in 0..<count { try await a.send([UInt8(i & 0xff), UInt8(i >> 8)]) }
      try a.shutdownWrite()
    }
    var received: [[UInt8]] = []
    for try await message in b.messages { received.append(message) }
    try await producer.value
    #expect(received.count == count)
    #expect(received.enumerated().allSatisfy { $0.element == [UInt8($0.offset & 0xff), UInt8($0.offset >> 8)] })
    #expect(try b.tryReceive() == .endOfStream)
    a.abort()
    b.abort()
    await loop.shutdown()
  }

  @Test("half-close: the peer sees end-of-stream and can still send back", arguments: loopBackends, Transport.allCases)
  func halfClose(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try socketPair(transport, loop)
    defer {
      a.abort()
      b.abort()
    }
    #expect(try a.trySend([1, 2, 3]))
    try a.shutdownWrite()
    #expect(throws: SocketError.writeShutdown) { try a.trySend([4]) }
    #expect(pollEvents(a.fileDescriptor).contains(.writable), "a send fails at once: writable, as TCP reports")
    #expect(eventually { (try? b.tryReceive()) == .message([1, 2, 3]) })
    #expect(eventually { (try? b.tryReceive()) == .endOfStream })
    #expect(pollEvents(b.fileDescriptor) == [.readable, .writable])
    #expect(try b.trySend([9]))
    #expect(eventually { (try? a.tryReceive()) == .message([9]) })
    try b.shutdownWrite()
    #expect(eventually { pollEvents(a.fileDescriptor) == [.readable, .writable, .hangup] })
    #expect(eventually { pollEvents(b.fileDescriptor) == [.readable, .writable, .hangup] })
  }

  @Test("graceful close flushes queued messages before closing", arguments: loopBackends)
  func gracefulClose(backend: EventLoop.BackendChoice) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try tcpPair(loop)
    defer { b.abort() }
    let payload = [UInt8](repeating: 0x5a, count: 32 * 1024)
    for _ in 0..<6 { #expect(try a.trySend(payload)) }
    try a.close()
    #expect(throws: SocketError.closed) { try a.trySend([1]) }
    #expect(throws: SocketError.closed) { try a.tryReceive() }
    #expect(throws: SocketError.closed) { try a.close() }
    var got = 0
    #expect(
      eventually {
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock, m == payload { got += 1 }
        return got == 6
      })
    #expect(eventually { (try? b.tryReceive()) == .endOfStream })
  }
}

func readFile(_ path: String) -> String {
  guard let file = fopen(path, "r") else { return "" }
  defer { fclose(file) }
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = fread(&buffer, 1, buffer.count, file)
    if n <= 0 { break }
    bytes += buffer[0..<n]
  }
  return String(decoding: bytes, as: UTF8.self)
}

/// Runs `body` on another thread; `join()` waits for its result.
final class Thread<T: Sendable>: Sendable {
  private let result = Mutex<T?>(nil)
  private let done = DispatchSemaphore(value: 0)
  init(_ body: @escaping @Sendable () -> T) {
    DispatchQueue.global().async { [self] in
      let value = body()
      self.result.withLock { $0 = value }
      self.done.signal()
    }
  }
  func join() -> T {
    done.wait()
    return result.withLock { $0! }
  }
}
