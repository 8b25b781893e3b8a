import ExampleProtocols
import Glibc
import TestSupport
import Testing
import UserProto

/// The tutorial's protocol on the socket API of Sources/UserProto/Pipes:
/// its page quotes only compiled code, and the protocol works end to end.
@Suite("Tutorial (Socket and SocketHandler)", .timeLimit(.minutes(2)), .testThreads)
struct TutorialV2Tests {
  static let sources = [
    "Sources/Examples/Protocols/FramedHandler.swift", "Sources/Examples/Protocols/FramedApplication.swift",
  ]

  /// The ```swift blocks of a Markdown page, without their fences.
  static func swiftBlocks(_ doc: String) -> [[Substring]] {
    var blocks: [[Substring]] = []
    var current: [Substring]?
    for line in doc.split(separator: "\n", omittingEmptySubsequences: false) {
      if current == nil, line == "```swift" {
        current = []
      } else if line == "```", let block = current {
        blocks.append(block)
        current = nil
      } else {
        current?.append(line)
      }
    }
    return blocks
  }

  /// Lines that are code, not comments.
  static func codeLines(_ text: some StringProtocol) -> [Substring] {
    text.split(separator: "\n").filter { !$0.drop { $0 == " " }.hasPrefix("//") }.map { Substring($0) }
  }

  @Test("every excerpt in docs/tutorial.md is verbatim in the compiled FramedHandler or FramedApplication")
  func excerptsMatch() throws {
    let doc = TutorialTests.read(TutorialTests.root + "/docs/tutorial.md")
    try #require(!doc.isEmpty, "docs/tutorial.md not found")
    let blocks = TutorialV2Tests.swiftBlocks(doc)
    var quoted: [String: Int] = [:]
    for block in blocks {
      let header = try #require(block.first)
      let path = String(header.dropFirst(3))
      #expect(TutorialV2Tests.sources.contains(path), "the tutorial quotes only the tutorial's sources: \(header)")
      let source = TutorialTests.read(TutorialTests.root + "/" + path)
      try #require(!source.isEmpty, "\(header) not found")
      let excerpt = block.dropFirst().joined(separator: "\n")
      #expect(source.contains(excerpt), "excerpt from \(header) no longer matches the source:\n\(excerpt)")
      quoted[path, default: 0] += 1
    }
    #expect(quoted[TutorialV2Tests.sources[0], default: 0] >= 8)
    #expect(quoted[TutorialV2Tests.sources[1], default: 0] >= 2)
    // The page teaches the handler API, not the old subclassing.
    #expect(!doc.contains("ProtocolSocket, @unchecked"))
    #expect(doc.contains("SocketHandler"))
  }

  @Test("the tutorial's protocol has no @unchecked Sendable and no lock")
  func noUncheckedSendable() throws {
    for path in TutorialV2Tests.sources {
      let source = TutorialTests.read(TutorialTests.root + "/" + path)
      try #require(!source.isEmpty, "\(path) not found")
      for line in TutorialV2Tests.codeLines(source) {
        #expect(!line.contains("@unchecked"), "\(path): \(line)")
        #expect(!line.contains("Mutex") && !line.contains("NSLock"), "\(path): \(line)")
      }
    }
  }

  @Test("the DocC landing page's sample handler is the compiled FramedHandler's, verbatim")
  func doccSampleMatches() throws {
    let doc = TutorialTests.read(TutorialTests.root + "/Sources/UserProto/UserProto.docc/UserProto.md")
    let source = TutorialTests.read(TutorialTests.root + "/" + TutorialV2Tests.sources[0])
    try #require(!doc.isEmpty && !source.isEmpty, "sources not found")
    // The first Swift block is the new API's sample: its handler's
    // received(_:from:context:) is quoted from the source.
    let first = try #require(TutorialV2Tests.swiftBlocks(doc).first)
    let start = try #require(first.firstIndex { $0.hasPrefix("  public func received(") }, "no received hook")
    let end = try #require(first[start...].firstIndex { $0 == "  }" }, "received does not end")
    let excerpt = first[start...end].joined(separator: "\n")
    #expect(source.contains(excerpt), "the DocC sample's received hook differs from FramedHandler.swift:\n\(excerpt)")
    #expect(first.contains { $0.contains("SocketHandler") })
    #expect(!first.contains { $0.contains("@unchecked") })
  }

  // MARK: End to end

  @Test("two sockets exchange messages both ways", arguments: ["tcp", "inproc"])
  func exchange(scheme: String) async throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(), loop: loop)
    let client = try Socket(FramedHandler(), loop: loop)
    defer {
      client.abort()
      server.abort()
    }
    let bound = try server.listen(scheme == "tcp" ? "tcp://127.0.0.1:0" : "inproc://\(unique("exchange"))")
    try client.dial(bound)
    // Sent before any pipe is up: it waits in the send queue.
    #expect(try client.trySend(Array("early".utf8)))
    #expect(text(receive(server)) == "early")
    let none = try await FramedApplication.exchange(
      server, sending: [Array("one".utf8), [], Array("three".utf8)], collecting: 0)
    #expect(none.isEmpty)
    let replies = try await FramedApplication.exchange(client, sending: [Array("back".utf8)], collecting: 3)
    #expect(replies.map { text($0) } == ["one", "", "three"])
    #expect(try await FramedApplication.readyPipes(client) == 1)
    #expect(try await FramedApplication.readyPipes(server) == 1)
    #expect(text(receive(server)) == "back")
    #expect(server.statistics.pipeFailures == 0 && client.statistics.pipeFailures == 0)
  }

  @Test("frames and the hello split at every offset are reassembled", arguments: ["tcp", "inproc"])
  func partialFrames(scheme: String) throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen(scheme == "tcp" ? "tcp://127.0.0.1:0" : "inproc://\(unique("partial"))")
    // The hello split at each offset, each on a new pipe.
    for cut in 1..<4 {
      let raw = try Socket(RawBytes(), loop: loop)
      defer { raw.abort() }
      try raw.dial(bound)
      #expect(try raw.trySend(Array(FramedHandler.hello[..<cut])))
      #expect(eventually { raw.statistics.messagesSent == 1 })
      usleep(2000)
      #expect(try raw.trySend(Array(FramedHandler.hello[cut...]) + FramedHandler.frame(Array("cut \(cut)".utf8))))
      #expect(text(receive(server)) == "cut \(cut)")
    }
    // Two frames (one empty) split at every offset, on one pipe.
    let raw = try Socket(RawBytes(), loop: loop)
    defer { raw.abort() }
    try raw.dial(bound)
    #expect(try raw.trySend(FramedHandler.hello))
    let bytes = FramedHandler.frame(Array("hello, partial world".utf8)) + FramedHandler.frame([])
    for cut in 0...bytes.count {
      for piece in [bytes[..<cut], bytes[cut...]] where !piece.isEmpty {
        #expect(try raw.trySend(Array(piece)))
      }
      #expect(text(receive(server)) == "hello, partial world", "cut at \(cut)")
      #expect(receive(server) == [], "cut at \(cut)")
    }
    #expect(try server.tryReceive() == .wouldBlock)
    #expect(server.statistics.pipeFailures == 0)
  }

  @Test("a malformed frame or hello fails only its pipe; the socket and its other pipes go on")
  func malformedFailsOnlyThePipe() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(), loop: loop)
    defer { server.abort() }
    let bound = try server.listen("tcp://127.0.0.1:0")
    let calm = ReconnectPolicy(minimum: .seconds(60))
    let good = try Socket(FramedHandler(), loop: loop)
    let badLength = try Socket(RawBytes(), loop: loop)
    let badHello = try Socket(RawBytes(), loop: loop)
    defer { for s in [badLength, badHello] { s.abort() }; good.abort() }
    for s in [badLength, badHello] { try s.dial(bound, reconnect: calm) }
    try good.dial(bound, reconnect: calm)
    #expect(eventually { server.pipeCount == 3 })
    // A length above the maximum message size, refused before buffering.
    #expect(try badLength.trySend(FramedHandler.hello + [0xff, 0xff, 0xff, 0xff, 1, 2, 3]))
    #expect(try badHello.trySend(Array("HTTP".utf8)))
    #expect(eventually { server.pipeCount == 1 && server.statistics.pipeFailures == 2 })
    // The failing peers see their pipes go; the good one still works.
    #expect(eventually { badLength.pipeCount == 0 && badHello.pipeCount == 0 })
    #expect(try good.trySend(Array("still here".utf8)))
    #expect(text(receive(server)) == "still here")
    #expect(try server.trySend(Array("and back".utf8)))
    #expect(text(receive(good)) == "and back")
    #expect(server.readiness.isDisjoint(with: [.error, .hangup]))
  }

  @Test("a peer that sends no hello is failed by the hello timer; one that ends mid-frame fails its pipe")
  func helloTimeoutAndTruncation() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(helloTimeout: .milliseconds(100)), loop: loop)
    defer { server.abort() }
    let name = "inproc://\(unique("timeout"))"
    try server.listen(name)
    let silent = try Socket(RawBytes(), loop: loop)
    defer { silent.abort() }
    try silent.dial(name, reconnect: ReconnectPolicy(minimum: .seconds(60)))
    #expect(eventually { server.statistics.pipesAdded == 1 })
    #expect(eventually { server.pipeCount == 0 && server.statistics.pipeFailures == 1 })

    let cut = try Socket(RawBytes(), loop: loop)
    try cut.dial(name, reconnect: ReconnectPolicy(minimum: .seconds(60)))
    #expect(try cut.trySend(FramedHandler.hello + [0, 0, 0, 9, 1, 2]))
    #expect(eventually { server.statistics.pipesAdded == 2 && server.pipeCount == 1 })
    try cut.close()
    #expect(eventually { server.pipeCount == 0 && server.statistics.pipeFailures == 2 })
    #expect(try server.tryReceive() == .wouldBlock)
  }

  @Test("a large message crosses TCP in both directions; one above the maximum is refused at send")
  func largeMessage() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(), loop: loop)
    let client = try Socket(FramedHandler(), loop: loop)
    defer {
      client.abort()
      server.abort()
    }
    try client.dial(try server.listen("tcp://127.0.0.1:0"))
    let big = (0..<900_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
    #expect(try client.trySend(big))
    #expect(receive(server) == big)
    #expect(try server.trySend(big))
    #expect(receive(client) == big)
    #expect(throws: SocketError.self) { try client.trySend([UInt8](repeating: 0, count: (1 << 20) + 1)) }
  }

  @Test("one socket dials two servers (tcp and inproc) and round-robins; a restarted server is re-dialed")
  func severalPipesAndReconnect() async throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let inproc = "inproc://\(unique("several"))"
    let (tcpServer, tcpBound) = try FramedApplication.server(listening: ["tcp://127.0.0.1:0"], loop: loop)
    var (inprocServer, inprocBound) = try FramedApplication.server(listening: [inproc], loop: loop)
    defer { tcpServer.abort() }
    let client = try FramedApplication.client(dialing: tcpBound + inprocBound, loop: loop)
    defer { client.abort() }
    #expect(eventually { tcpServer.pipeCount == 1 && inprocServer.pipeCount == 1 && client.pipeCount == 2 })
    // Wait for both hellos, then four sends go two and two.
    #expect(await readySoon(client, 2))
    for i in 0..<4 { #expect(try client.trySend(Array("m\(i)".utf8))) }
    #expect(eventually { tcpServer.statistics.messagesReceived == 2 && inprocServer.statistics.messagesReceived == 2 })

    inprocServer.abort()
    #expect(eventually { client.pipeCount == 1 })
    (inprocServer, inprocBound) = try FramedApplication.server(listening: [inproc], loop: loop)
    defer { inprocServer.abort() }
    #expect(inprocBound.map(\.description) == [inproc])
    #expect(eventually(5) { client.pipeCount == 2 })
    #expect(await readySoon(client, 2))
    #expect(client.statistics.reconnects >= 1)
  }

  @Test("the socket's fd sits in one poll(2) set with a kernel TCP socket and is readable exactly when a message is")
  func pollWithKernelSocket() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let server = try Socket(FramedHandler(), loop: loop)
    let client = try Socket(FramedHandler(), loop: loop)
    defer {
      client.abort()
      server.abort()
    }
    try client.dial(try server.listen("tcp://127.0.0.1:0"))
    let (a, b) = try tcpPair()
    defer {
      close(a)
      close(b)
    }
    var received: [[UInt8]] = []
    // Nothing is readable yet: poll times out.
    var ready = try FramedApplication.pollOnce(client, besides: a, milliseconds: 50, received: &received)
    #expect(ready == FramedApplication.Readable(socket: false, kernel: false))
    // The kernel socket alone.
    #expect(write(b, "k", 1) == 1)
    ready = try FramedApplication.pollOnce(client, besides: a, milliseconds: 5000, received: &received)
    #expect(ready == FramedApplication.Readable(socket: false, kernel: true))
    var byte: UInt8 = 0
    #expect(read(a, &byte, 1) == 1)
    // The protocol socket alone: two messages, both taken.
    #expect(try server.trySend(Array("p1".utf8)))
    #expect(try server.trySend(Array("p2".utf8)))
    #expect(eventually { client.readiness.contains(.readable) && client.statistics.messagesReceived == 2 })
    ready = try FramedApplication.pollOnce(client, besides: a, milliseconds: 5000, received: &received)
    #expect(ready == FramedApplication.Readable(socket: true, kernel: false))
    #expect(received.map { text($0) } == ["p1", "p2"])
    // Drained: not readable any more.
    ready = try FramedApplication.pollOnce(client, besides: a, milliseconds: 50, received: &received)
    #expect(ready.socket == false)
  }
}

/// A peer that speaks raw bytes: each message sent is written as is, each
/// chunk received is delivered as is (the default hooks).
final class RawBytes: SocketHandler {}

private func unique(_ tag: String) -> String { "tutorial-\(tag)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))" }

private func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

/// Waits until `condition` holds, up to `seconds`.
private func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
  let deadline = EventLoop.now() + UInt64(seconds * 1e9)
  while !condition() {
    if EventLoop.now() > deadline { return false }
    usleep(1000)
  }
  return true
}

/// The next message within 10 s, or nil.
private func receive<H>(_ socket: Socket<H>) -> [UInt8]? {
  var message: [UInt8]?
  _ = eventually {
    if case .message(let m)? = try? socket.tryReceive() { message = m }
    return message != nil
  }
  return message
}

/// Waits up to 10 s until `count` pipes of `socket` finished the hello
/// (asked on the loop, through the protocol's own API).
private func readySoon(_ socket: Socket<FramedHandler>, _ count: Int) async -> Bool {
  let deadline = EventLoop.now() + 10_000_000_000
  while EventLoop.now() < deadline {
    if (try? await FramedApplication.readyPipes(socket)) == count { return true }
    try? await Task.sleep(for: .milliseconds(2))
  }
  return false
}

/// A connected pair of kernel TCP sockets on the loopback.
private func tcpPair() throws -> (Int32, Int32) {
  let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  try #require(listener >= 0)
  defer { close(listener) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let bound = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
      bind(listener, p, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, p, &length) == 0
    }
  }
  try #require(bound)
  let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) == 0 }
  }
  try #require(connected)
  let accepted = accept(listener, nil, nil)
  try #require(accepted >= 0)
  return (accepted, client)
}
