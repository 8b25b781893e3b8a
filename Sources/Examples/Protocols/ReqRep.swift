import Synchronization
public import UserProto

/// SP REQ (req0): sends requests and receives the matching replies.
///
/// Each request gets a 32-bit id with the top bit set, starting at a random
/// value and incrementing, prepended to the body on the wire. A reply is
/// delivered only if it carries the id of the request in flight; others are
/// dropped and counted. Sending a new request abandons the previous one, as
/// nng's req0 does. If no reply arrives within ``resendInterval`` the request
/// is sent again (same id).
public final class ReqSocket: SPSocket, @unchecked Sendable {
  public override var protocolID: ProtocolID { .req }
  public override var peerProtocolID: ProtocolID { .rep }
  /// The request id travels in the frame, so the body limit is 4 bytes less.
  public override var messageOverhead: Int { 4 }

  private let settings = Mutex<(resend: Duration, resends: Int, ignored: Int)>((.seconds(60), 0, 0))
  /// Loop-confined.
  private var nextID = UInt32.random(in: 0...UInt32.max) | 0x8000_0000
  private var inFlight: (id: UInt32, wire: [UInt8])?
  private var resendTimer: ProtocolTimer?

  /// How long to wait for a reply before sending the request again (default
  /// 60 s, as nng and nanomsg).
  public var resendInterval: Duration {
    get { settings.withLock { $0.resend } }
    set { settings.withLock { $0.resend = newValue } }
  }
  /// Requests sent again for want of a reply.
  public var resends: Int { settings.withLock { $0.resends } }
  /// Replies dropped: malformed, or for a request no longer in flight.
  public var ignoredReplies: Int { settings.withLock { $0.ignored } }

  public override func encode(_ message: [UInt8]) throws -> [UInt8] {
    let id = nextID
    nextID = (nextID &+ 1) | 0x8000_0000
    let wire = frame(bigEndian(id) + message)
    inFlight = (id, wire)
    armResend()
    return wire
  }

  private func armResend() {
    resendTimer?.cancel()
    resendTimer = try? startTimer(after: resendInterval)
  }

  public override func timerFired(_ timer: ProtocolTimer) {
    guard timer === resendTimer, let request = inFlight else {
      super.timerFired(timer)
      return
    }
    settings.withLock { $0.resends += 1 }
    writeRaw(request.wire)
    armResend()
  }

  public override func receivedMessage(_ message: [UInt8]) throws {
    guard message.count >= 4, let request = inFlight else {
      settings.withLock { $0.ignored += 1 }
      return
    }
    let id = readBigEndian(message, at: 0)
    guard id == request.id else {
      settings.withLock { $0.ignored += 1 }
      return
    }
    inFlight = nil
    resendTimer?.cancel()
    try deliver(Array(message[4...]))
  }
}

/// SP REP (rep0): receives requests and sends replies.
///
/// A request's backtrace (hop words, then the request id with its top bit
/// set; at most 8 words) is kept and prepended to the reply, so replies go
/// back the way requests came. Replies pair with requests in order. Requests
/// without a valid backtrace are dropped and counted (the connection stays
/// up, as nanomsg does).
public final class RepSocket: SPSocket, @unchecked Sendable {
  public override var protocolID: ProtocolID { .rep }
  public override var peerProtocolID: ProtocolID { .req }
  /// A direct peer's backtrace is the 4-byte request id.
  public override var messageOverhead: Int { 4 }

  /// The most backtrace words accepted (nng and nanomsg: 8).
  public static let maximumHops = 8
  private let counters = Mutex<(dropped: Int, unmatched: Int)>((0, 0))
  /// Loop-confined: backtraces of requests not yet answered, oldest first.
  private var backtraces: [[UInt8]] = []
  private var head = 0

  /// Requests dropped for a malformed backtrace or too many hops.
  public var droppedRequests: Int { counters.withLock { $0.dropped } }
  /// Replies sent with no request to answer (dropped).
  public var unmatchedReplies: Int { counters.withLock { $0.unmatched } }

  public override func receivedMessage(_ message: [UInt8]) throws {
    var offset = 0
    while true {
      guard message.count >= offset + 4, offset / 4 < RepSocket.maximumHops else {
        counters.withLock { $0.dropped += 1 }
        return
      }
      let word = readBigEndian(message, at: offset)
      offset += 4
      if word & 0x8000_0000 != 0 { break }
    }
    backtraces.append(Array(message[0..<offset]))
    try deliver(Array(message[offset...]))
  }

  public override func encode(_ message: [UInt8]) throws -> [UInt8] {
    guard head < backtraces.count else {
      counters.withLock { $0.unmatched += 1 }
      return []
    }
    let backtrace = backtraces[head]
    head += 1
    if head > 32 && head * 2 > backtraces.count {
      backtraces.removeFirst(head)
      head = 0
    }
    return frame(backtrace + message)
  }
}

/// An SP echo server: a REP listener that replies to every request with the
/// request's body, on the event loop.
public final class EchoServer: Sendable {
  public let listener: ProtocolListener<RepSocket>
  private final class Shared: Sendable {
    let connections = Mutex<[ObjectIdentifier: RepSocket]>([:])
    let served = Atomic<Int>(0)
  }
  private let shared = Shared()

  /// Listens on `address` (e.g. `try SPAddress.parse("tcp://127.0.0.1:5555")`).
  public init(on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions()) throws {
    let shared = self.shared
    listener = try ProtocolListener<RepSocket>(
      on: address, loop: loop, options: options, queuesConnections: false
    ) { socket in
      shared.connections.withLock { $0[ObjectIdentifier(socket)] = socket }
      socket.handleMessagesOnLoop { socket, body in
        if (try? socket.trySend(body)) == true { shared.served.add(1, ordering: .relaxed) }
      }
      socket.observeStateChanges { state in
        switch state {
        // SP has no half-close: a peer that finished sending has gone.
        case .closed, .failed, .peerFinishedSending:
          shared.connections.withLock { $0[ObjectIdentifier(socket)] = nil }
          socket.abort()
        default: break
        }
      }
    }
  }

  /// Requests answered so far.
  public var requestsServed: Int { shared.served.load(ordering: .relaxed) }
  /// Connections currently open.
  public var connectionCount: Int { shared.connections.withLock { $0.count } }
  public var localAddress: SocketAddress { listener.localAddress }

  public func close() {
    try? listener.close()
    let all = shared.connections.withLock { c -> [RepSocket] in
      defer { c = [:] }
      return Array(c.values)
    }
    for socket in all { socket.abort() }
  }
}

func bigEndian(_ value: UInt32) -> [UInt8] {
  [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
}

func readBigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
  UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
    | UInt32(bytes[offset + 3])
}
