import CUserProtoShim
import Dispatch
import Glibc
import Locking
import PropertyBased
import Synchronization
import TestSupport
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

/// A model of socket `a`'s buffers and connection, from which the test
/// derives the readiness `a` must show (docs/sockets.md, "Readiness"),
/// independently of the library. The peer `b` never reads: what `a` sends
/// is absorbed by b's buffers (far more than a run sends).
struct Model {
  static let options = SocketOptions(
    receiveHighWatermark: 200, receiveLowWatermark: 100, sendHighWatermark: 1000, sendLowWatermark: 300)
  static let cost = SocketOptions.perMessageCost

  var queued: [[UInt8]] = []
  /// a stopped reading at its receive high watermark.
  var paused = false
  /// The peer finished sending; a sees it once reading (not paused).
  var peerEnding = false
  var peerFinished = false
  /// The peer reset the connection; a sees it once reading, or sending.
  var peerResetting = false
  var failed = false
  var errorReported = false
  var writeShut = false
  var closed = false
  /// Transmit queue bytes; only non-zero while the loop is held.
  var transmit = 0
  var latch = true
  var peerOpen = true

  var queuedCost: Int { queued.reduce(0) { $0 + $1.count + Model.cost } }

  var expected: MaskEvents {
    var e: MaskEvents = []
    let errorPending = failed && !errorReported
    if !queued.isEmpty || peerFinished || failed { e.insert(.readable) }
    let sendWouldNotBlock = latch && transmit < Model.options.sendHighWatermark
    if writeShut || failed || sendWouldNotBlock { e.insert(.writable) }
    if errorPending { e.insert(.error) }
    if failed || (peerFinished && writeShut) { e.insert(.hangup) }
    return e
  }

  /// What a's transport meets while it reads: the peer's end or its reset.
  mutating func settleReading() {
    guard !paused, !failed, !closed else { return }
    if peerResetting {
      fail()
    } else if peerEnding {
      peerFinished = true
    }
  }

  mutating func deliver(_ message: [UInt8]) {
    queued.append(message)
    if queuedCost >= Model.options.receiveHighWatermark { paused = true }
  }

  mutating func fail() {
    failed = true
    transmit = 0
    latch = true
  }
}

enum Step: CaseIterable, Sendable {
  case send, sendBurst, receive, peerSend, peerClose, peerAbort, shutdown, close
}

/// Holds a loop's thread in a task until released, so nothing it would do
/// (flushing sends) happens meanwhile.
final class LoopHold: Sendable {
  private let entered = DispatchSemaphore(value: 0)
  private let gate = DispatchSemaphore(value: 0)
  init(_ loop: EventLoop) throws {
    try loop.execute { [entered, gate] in
      entered.signal()
      gate.wait()
    }
    entered.wait()
  }
  func release() { gate.signal() }
}

@Suite("Protocol sockets", .testThreads)
struct SocketTests {
  @Test(
    "property: the fd's readiness always equals the readiness derived from a model of the socket",
    arguments: loopBackends, Transport.allCases)
  func readinessProperty(backend: EventLoop.BackendChoice, transport: Transport) async throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    await propertyCheck(count: 25, input: Gen<Step>.case.array(of: 1...30)) { steps in
      SocketTests.run(steps, transport: transport, loop: loop)
    }
  }

  /// Applies `steps` to a fresh pair and checks `a`'s fd after every step.
  static func run(_ steps: [Step], transport: Transport, loop: EventLoop) {
    do {
      let (a, b) = try socketPair(transport, loop, options: Model.options)
      defer {
        a.abort()
        b.abort()
      }
      var model = Model()
      for (i, step) in steps.enumerated() {
        try apply(step, i, &model, a, b, loop, steps)
        model.settleReading()
        if model.closed {
          #expect(a.mask.isClosed)
          continue
        }
        // Deliveries are asynchronous: wait until a's state holds what the
        // model says; then the fd must show exactly the model's readiness.
        let m = model
        let settled = eventually(5) {
          a.state.withLock { s in
            s.queuedMessages == m.queued.count && s.peerFinished == m.peerFinished && s.failed == m.failed
              && s.readingPaused == m.paused && s.transmitBytes == 0
          }
        }
        #expect(settled, "step \(i) \(step): the socket did not settle: \(steps)")
        let expected = model.expected
        #expect(a.readiness == expected, "step \(i) \(step): derived readiness: \(steps)")
        // The loop thread writes the fd right after it releases the state
        // lock: allow it that moment, then the fd must show exactly the model.
        _ = eventually(1) { pollEvents(a.fileDescriptor) == expected }
        #expect(pollEvents(a.fileDescriptor) == expected, "step \(i) \(step): \(steps)")
      }
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }

  /// Applies one step to `a` (and its peer `b`) and to the model.
  static func apply(
    _ step: Step, _ i: Int, _ model: inout Model, _ a: FramedSocket, _ b: FramedSocket, _ loop: EventLoop,
    _ steps: [Step]
  ) throws {
    let outgoing = [UInt8](repeating: UInt8(i), count: 100)
    switch step {
    case .send, .sendBurst:
      if model.closed {
        #expect(throws: SocketError.closed) { try a.trySend(outgoing) }
      } else if model.failed {
        #expect(throws: SocketError.peerVanished) { try a.trySend(outgoing) }
      } else if model.writeShut {
        #expect(throws: SocketError.writeShutdown) { try a.trySend(outgoing) }
      } else if step == .send {
        #expect(try a.trySend(outgoing))
        // To a reset peer: the send fails at the transport.
        if model.peerResetting { model.fail() }
      } else {
        // With the loop held, the sends stay queued: the transmit queue
        // reaches the high watermark and the fd stops being writable.
        let hold = try LoopHold(loop)
        var accepted = 0
        while accepted < 100, (try? a.trySend(outgoing)) == true { accepted += 1 }
        let perMessage = outgoing.count + Model.cost
        model.transmit = accepted * perMessage
        model.latch = false
        let held = model.expected
        let seen = pollEvents(a.fileDescriptor)
        hold.release()
        #expect(accepted == (Model.options.sendHighWatermark + perMessage - 1) / perMessage)
        #expect(seen == held, "step \(i) \(step) with the loop held: \(steps)")
        model.transmit = 0
        model.latch = true
        if model.peerResetting { model.fail() }
      }
    case .receive:
      if model.closed {
        #expect(throws: SocketError.closed) { try a.tryReceive() }
      } else if !model.queued.isEmpty {
        #expect(try a.tryReceive() == .message(model.queued.removeFirst()))
        if model.paused && model.queuedCost <= Model.options.receiveLowWatermark { model.paused = false }
      } else if model.failed && !model.errorReported {
        #expect(throws: SocketError.peerVanished) { try a.tryReceive() }
        model.errorReported = true
      } else {
        #expect(try a.tryReceive() == (model.peerFinished || model.failed ? .endOfStream : .wouldBlock))
      }
    case .peerSend:
      // The peer sends only while a reads, so each message is in a's queue
      // after the step (a paused reader would later get them in one chunk
      // or several, depending on the transport).
      if model.peerOpen && !model.paused && !model.failed && !model.closed {
        let message = [UInt8(i), 7]
        #expect(try b.trySend(message))
        model.deliver(message)
      }
    case .peerClose:
      if model.peerOpen {
        try b.close()
        model.peerOpen = false
        model.peerEnding = true
      }
    case .peerAbort:
      if model.peerOpen {
        b.abort(reset: true)
        model.peerOpen = false
        model.peerResetting = true
      }
    case .shutdown:
      if model.closed {
        #expect(throws: SocketError.closed) { try a.shutdownWrite() }
      } else {
        try a.shutdownWrite()
        model.writeShut = true
      }
    case .close:
      if model.closed {
        #expect(throws: SocketError.closed) { try a.close() }
      } else {
        try a.close()
        model.closed = true
      }
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
    // The peer writes until TCP flow control stops it: 100 refusals in a
    // row, 1 ms apart (the last frame may be cut short). Without
    // backpressure it would never be stopped and would hit the cap.
    let cap = 256 << 20
    var written = 0
    var offset = 0  // within the current frame
    var refusedInARow = 0
    while written < cap && refusedInARow < 100 {
      let n = message.withUnsafeBytes {
        send(peer, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
      }
      if n > 0 {
        written += n
        offset = (offset + n) % message.count
        refusedInARow = 0
      } else {
        let code = errno
        try #require(code == EAGAIN || code == EWOULDBLOCK, "send failed: errno \(code)")
        refusedInARow += 1
        usleep(1000)
      }
    }
    #expect(written < cap, "the peer was held back by TCP flow control (wrote \(written) bytes)")
    // The peer can be refused before the loop got to read (a loaded
    // machine): what sits in the kernel buffers then is still far over the
    // high watermark, so reading pauses once the loop catches up.
    #expect(eventually { socket.state.withLock { $0.readingPaused } }, "reading paused at the high watermark")
    let queued = socket.state.withLock { $0.receiveBytes }
    // What the kernel may hold on the way in (the socket's receive buffer
    // autotunes up to tcp_rmem's maximum) bounds what arrives after a pause.
    let rmemMax =
      Int(readFile("/proc/sys/net/ipv4/tcp_rmem").split(separator: "\t").last.map { $0.filter(\.isNumber) } ?? "") ?? 6
      << 20
    #expect(queued <= options.receiveHighWatermark + rmemMax, "queued \(queued) bytes")
    // Draining resumes reading, and every byte the peer wrote arrives.
    var got = 0
    #expect(
      eventually(20) {
        while case .message(let m) = (try? socket.tryReceive()) ?? .wouldBlock { got += m.count + 4 }
        return got >= written - written % message.count  // the last frame may be cut short
      },
      "got \(got) of \(written); state \(socket.connectionState), paused \(socket.state.withLock { $0.readingPaused })")
  }

  /// The receiver and the senders wait in poll(2) without a timeout: a lost
  /// wake-up blocks them, and the watchdog then fails the test.
  @Test("many threads send while another receives; per-sender order holds", arguments: loopBackends, Transport.allCases)
  func crossThread(backend: EventLoop.BackendChoice, transport: Transport) throws {
    let loop = try makeLoop(backend)
    defer { loop.shutdownAndWait() }
    let (a, b) = try socketPair(transport, loop)
    defer {
      a.abort()
      b.abort()
    }
    let watchdog = try Watchdog(seconds: 60)
    defer { watchdog.disarm() }
    let senders = 4
    let perSender = 500
    let receiver = Thread {
      var last = [Int](repeating: -1, count: senders)
      var count = 0
      var ordered = true
      while count < senders * perSender {
        while case .message(let m) = (try? b.tryReceive()) ?? .wouldBlock {
          let sender = Int(m[0])
          let index = Int(m[1]) << 8 | Int(m[2])
          if index != last[sender] + 1 { ordered = false }
          last[sender] = index
          count += 1
        }
        if count < senders * perSender && !watchdog.wait(b.fileDescriptor, POLLIN) { break }
      }
      return (count, ordered)
    }
    DispatchQueue.concurrentPerform(iterations: senders) { s in
      for i in 0..<perSender {
        let message = [UInt8(s), UInt8(i >> 8), UInt8(i & 0xff)]
        while (try? a.trySend(message)) != true {
          if !watchdog.wait(a.fileDescriptor, POLLOUT) { return }
        }
      }
    }
    let (count, ordered) = receiver.join()
    #expect(!watchdog.fired, "a wait outlived the watchdog: a lost wake-up")
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

  /// A `for await` consumer that stops taking messages: the receiver stops
  /// reading at its high watermark, the sender's async `send` suspends at
  /// its own, and memory stays bounded on both sides. Then everything
  /// arrives, in order.
  @Test("async backpressure: a stalled consumer suspends the async sender; nothing is lost", arguments: loopBackends)
  func asyncBackpressure(backend: EventLoop.BackendChoice) async throws {
    let loop = try makeLoop(backend)
    let options = SocketOptions(
      receiveHighWatermark: 4096, receiveLowWatermark: 1024, sendHighWatermark: 4096, sendLowWatermark: 1024)
    let (a, b) = try makeSocketPair(FramedSocket.self, loop: loop, options: options)
    let count = 3000
    func payload(_ i: Int) -> [UInt8] { [UInt8(i & 0xff), UInt8(i >> 8)] + [UInt8](repeating: 7, count: 98) }
    let sent = SentCounter()
    let producer = Task {
      for i in 0..<count {
        try await a.send(payload(i))
        sent.value.add(1, ordering: .relaxed)
      }
      try a.shutdownWrite()
    }
    var iterator = b.messages.makeAsyncIterator()
    #expect(try await iterator.next() == payload(0))
    // The consumer stalls: the sender must end up suspended in send().
    var stalled = false
    for _ in 0..<2000 where !stalled {
      stalled = a.state.withLock { !$0.sendWaiters.isEmpty } && b.state.withLock { $0.readingPaused }
      if !stalled { try await Task.sleep(for: .milliseconds(5)) }
    }
    #expect(stalled, "the async sender suspended and the receiver paused reading")
    let held = sent.value.load(ordering: .relaxed)
    #expect(held < count - 1, "the sender is held back (sent \(held) of \(count))")
    // Bounded: the receive queue by its high watermark plus one flushed
    // batch (at most the sender's high watermark and a message), the
    // sender's queue by its own.
    let perMessage = 4 + 100 + SocketOptions.perMessageCost
    #expect(
      b.state.withLock { $0.receiveBytes } <= options.receiveHighWatermark + options.sendHighWatermark + perMessage)
    #expect(a.state.withLock { $0.pendingBytes } <= options.sendHighWatermark + perMessage)
    // Resume: every message arrives once, in order, then end-of-stream.
    var next = 1
    while let message = try await iterator.next() {
      #expect(message == payload(next), "message \(next)")
      next += 1
    }
    try await producer.value
    #expect(next == count)
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
  private let result = Lock<T?>(nil)
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

/// A counter the producer task updates and the test reads.
final class SentCounter: Sendable {
  let value = Atomic<Int>(0)
}
