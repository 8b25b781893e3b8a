import Locking
public import UserProto

/// SP REQ (req0): sends requests and receives the matching replies.
///
/// Each request gets a 32-bit id with the top bit set, starting at a random
/// value and incrementing, prepended to the body on the wire. A reply is
/// delivered only if it carries the id of the latest request; others are
/// dropped and counted. Sending a new request abandons the previous one, as
/// nng's req0 does: once the send call returns, no reply to an earlier
/// request is received, including one that had already arrived and was
/// queued. If no reply arrives within ``resendInterval`` the request is sent
/// again (same id). When the connection fails or closes, the request is
/// abandoned and its timer stops.
public final class ReqSocket: SPSocket, SPProtocolIdentity, @unchecked Sendable {
  public static let protocolID = ProtocolID.req
  public static let peerProtocolID = ProtocolID.rep
  /// The request id travels in the frame, so the body limit is 4 bytes less.
  public override var messageOverhead: Int { 4 }

  private let settings = Lock<(resend: Duration, resends: Int, ignored: Int)>((.seconds(60), 0, 0))
  /// The id a reply must carry (nil: no request awaits one) and the next
  /// id. Set by ``willSend(_:)`` on the sender's thread; checked on the loop
  /// with the lock held until the reply is queued, so a request sent
  /// meanwhile either sees the reply queued (and drops it) or rejects it.
  private let requests = Lock<(awaited: UInt32?, next: UInt32)>(
    (nil, UInt32.random(in: 0...UInt32.max) | 0x8000_0000))
  /// Loop-confined: the latest request put on the wire, for resends.
  private var inFlight: (id: UInt32, wire: [UInt8])?
  private var resendTimer: ProtocolTimer?

  /// How long to wait for a reply before sending the request again (default
  /// 60 s, as nng and nanomsg); zero or less never resends, and neither does
  /// one too long for the loop's clock (over about 584 years).
  public var resendInterval: Duration {
    get { settings.withLock { $0.resend } }
    set { settings.withLock { $0.resend = newValue } }
  }
  /// Requests sent again for want of a reply.
  public var resends: Int { settings.withLock { $0.resends } }
  /// Replies dropped: malformed, or for a request no longer awaited
  /// (including replies already queued when a new request was sent).
  public var ignoredReplies: Int { settings.withLock { $0.ignored } }

  /// Gives the request its id and makes it the only one whose reply counts.
  public override func willSend(_ message: [UInt8]) throws(SocketError) -> [UInt8] {
    let id = requests.withLock { r -> UInt32 in
      let id = r.next
      r.next = (r.next &+ 1) | 0x8000_0000
      r.awaited = id
      return id
    }
    // Replies queued before this point answer an abandoned request.
    let dropped = discardReceivedMessages()
    if dropped > 0 { settings.withLock { $0.ignored += dropped } }
    return bigEndian(id) + message
  }

  public override func encode(_ message: [UInt8]) throws -> [UInt8] {
    let wire = frame(message)
    inFlight = (readBigEndian(message, at: 0), wire)
    armResend()
    return wire
  }

  private func armResend() {
    resendTimer?.cancel()
    resendTimer = nil
    let interval = resendInterval
    if interval > .zero { resendTimer = try? startTimer(after: interval) }
  }

  public override func connectionStateChanged(_ state: ConnectionState) {
    super.connectionStateChanged(state)
    switch state {
    case .failed, .closed, .peerFinishedSending:
      // No reply can come any more: stop resending.
      resendTimer?.cancel()
      resendTimer = nil
      inFlight = nil
      requests.withLock { $0.awaited = nil }
    default: break
    }
  }

  public override func timerFired(_ timer: ProtocolTimer) {
    guard timer === resendTimer, let request = inFlight else {
      super.timerFired(timer)
      return
    }
    // A newer request may be queued and not yet encoded: then this one is
    // abandoned and not sent again.
    guard requests.withLock({ $0.awaited }) == request.id else {
      resendTimer = nil
      return
    }
    settings.withLock { $0.resends += 1 }
    writeRaw(request.wire)
    armResend()
  }

  public override func receivedMessage(_ message: [UInt8]) throws {
    let id = message.count >= 4 ? readBigEndian(message, at: 0) : nil
    let accepted: Bool
    if handlesMessagesOnLoop {
      // No queue: the handler runs inside deliver and may send the next
      // request, whose willSend takes the lock, so it is not held there.
      accepted = requests.withLock { r -> Bool in
        guard let id, id == r.awaited else { return false }
        r.awaited = nil
        return true
      }
      if accepted { try deliver(Array(message[4...])) }
    } else {
      accepted = try requests.withLock { r throws(SocketError) -> Bool in
        guard let id, id == r.awaited else { return false }
        r.awaited = nil
        try deliver(Array(message[4...]))
        return true
      }
    }
    guard accepted else {
      settings.withLock { $0.ignored += 1 }
      return
    }
    if inFlight?.id == id {
      inFlight = nil
      resendTimer?.cancel()
      resendTimer = nil
    }
  }
}

/// SP REP (rep0): receives requests and sends replies.
///
/// A request starts with its backtrace: hop words (added by devices on the
/// way), then the request id with its top bit set; at most 8 words. The
/// reply must carry the same backtrace back, so each ``Request`` keeps its
/// own and ``reply(to:with:)`` prepends it: replies may be sent in any
/// order, any number of requests may be outstanding (as with a device in
/// front), and a request that is never answered leaves nothing behind.
///
/// Messages through the plain socket API are raw, like an nng raw socket:
/// ``tryReceive()`` returns backtrace and body, and ``trySend(_:)`` takes
/// them back the same way. Requests without a valid backtrace are dropped and
/// counted (the connection stays up, as nanomsg does); a raw reply without
/// one is dropped and counted too.
public final class RepSocket: SPSocket, SPProtocolIdentity, @unchecked Sendable {
  public static let protocolID = ProtocolID.rep
  public static let peerProtocolID = ProtocolID.req

  /// The most backtrace words accepted (nng and nanomsg: 8).
  public static let maximumHops = 8

  /// One request: the backtrace to answer with, and the body.
  public struct Request: Sendable, Hashable {
    /// Hop words, then the request id (top bit set), as received.
    public let backtrace: [UInt8]
    /// The request's body.
    public let body: [UInt8]

    /// Splits a raw message into backtrace and body; nil when it has no
    /// valid backtrace (no word with the top bit within 8 words).
    public init?(raw message: [UInt8]) {
      guard let length = RepSocket.backtraceLength(message) else { return nil }
      backtrace = Array(message[0..<length])
      body = Array(message[length...])
    }

    /// The request id: the backtrace's last word.
    public var id: UInt32 { readBigEndian(backtrace, at: backtrace.count - 4) }
    /// Hop words before the request id.
    public var hops: Int { backtrace.count / 4 - 1 }
  }

  /// The length in bytes of the backtrace `message` starts with: words up
  /// to and including the first with its top bit set, at most
  /// ``maximumHops``; nil when there is no such word.
  public static func backtraceLength(_ message: [UInt8]) -> Int? {
    var offset = 0
    while true {
      guard message.count >= offset + 4, offset / 4 < maximumHops else { return nil }
      let word = readBigEndian(message, at: offset)
      offset += 4
      if word & 0x8000_0000 != 0 { return offset }
    }
  }

  private let counters = Lock<(dropped: Int, malformedReplies: Int)>((0, 0))

  /// Requests dropped for a malformed backtrace or too many hops.
  public var droppedRequests: Int { counters.withLock { $0.dropped } }
  /// Raw replies dropped because they did not start with a backtrace.
  public var malformedReplies: Int { counters.withLock { $0.malformedReplies } }

  public override func receivedMessage(_ message: [UInt8]) throws {
    guard RepSocket.backtraceLength(message) != nil else {
      counters.withLock { $0.dropped += 1 }
      return
    }
    try deliver(message)
  }

  public override func encode(_ message: [UInt8]) throws -> [UInt8] {
    guard RepSocket.backtraceLength(message) != nil else {
      counters.withLock { $0.malformedReplies += 1 }
      return []
    }
    return frame(message)
  }

  /// Queues `body` as the reply to `request`; false when the send would
  /// block (the reply is then not sent; the peer's REQ will resend).
  @discardableResult
  public func reply(to request: Request, with body: [UInt8]) throws(SocketError) -> Bool {
    try trySend(request.backtrace + body)
  }

  /// The result of ``tryReceiveRequest()``.
  public enum RequestResult: Sendable, Hashable {
    /// The next request.
    case request(Request)
    /// Nothing queued yet.
    case wouldBlock
    /// The peer is gone (after its error, if any, was received).
    case endOfStream
  }

  /// Takes the next request without blocking.
  public func tryReceiveRequest() throws(SocketError) -> RequestResult {
    switch try tryReceive() {
    case .message(let m):
      // Checked on arrival.
      guard let request = Request(raw: m) else { return .wouldBlock }
      return .request(request)
    case .wouldBlock: return .wouldBlock
    case .endOfStream: return .endOfStream
    }
  }

  /// Hands each request to `handler` on the loop (see
  /// ``ProtocolSocket/handleMessagesOnLoop(_:)``).
  public func handleRequestsOnLoop(_ handler: @escaping (RepSocket, Request) -> Void) {
    handleMessagesOnLoop { socket, message in
      guard let socket = socket as? RepSocket, let request = Request(raw: message) else { return }
      handler(socket, request)
    }
  }
}

/// An SP echo server: a REP listener that replies to every request with the
/// request's body, on the event loop.
///
/// A reply that cannot be queued (the connection's send queue is full, or it
/// failed) is dropped and counted; the peer's REQ resends. Connections that
/// fail (a bad header, an oversize frame, a reset) are counted and their
/// reasons kept in ``failures``.
public final class EchoServer: Sendable {
  public let listener: ProtocolListener<RepSocket>
  /// Connections that ended in failure, and why.
  public let failures: FailureLog

  /// What the server has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Requests answered.
    public var requestsServed = 0
    /// Requests whose reply could not be queued (send queue full).
    public var repliesDropped = 0
    /// Requests without a valid backtrace, on connections that have ended.
    public var malformedRequests = 0
    /// Connections whose SP header was accepted.
    public var connectionsAccepted = 0
  }

  private final class Shared: Sendable {
    let connections = Lock<[ObjectIdentifier: RepSocket]>([:])
    let statistics = Lock(Statistics())
    let failures: FailureLog
    init(_ failures: FailureLog) { self.failures = failures }

    /// The connection ended: forget it (first time only) and count why.
    func ended(_ socket: RepSocket, _ state: ConnectionState) {
      guard connections.withLock({ $0.removeValue(forKey: ObjectIdentifier(socket)) }) != nil else { return }
      statistics.withLock { $0.malformedRequests += socket.droppedRequests }
      if case .failed(let error) = state { failures.record(error) }
      socket.abort()
    }
  }
  private let shared: Shared

  /// Listens on `address` (e.g. `try SPAddress.parse("tcp://127.0.0.1:5555")`),
  /// with SP/IPC framing on a Unix-domain address. A peer has
  /// `headerTimeout` to send its SP header.
  public init(
    on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions(),
    headerTimeout: Duration = SPSocket.headerTimeout
  ) throws {
    let failures = FailureLog()
    self.failures = failures
    let shared = Shared(failures)
    self.shared = shared
    let framing = SPSocket.Framing(for: address)
    listener = try ProtocolListener<RepSocket>(
      on: address, loop: loop, options: options, queuesConnections: false
    ) { socket in
      socket.framing = framing
      socket.peerHeaderTimeout = headerTimeout
      shared.connections.withLock { $0[ObjectIdentifier(socket)] = socket }
      socket.whenHandshakeCompletes { _ in shared.statistics.withLock { $0.connectionsAccepted += 1 } }
      socket.handleRequestsOnLoop { socket, request in
        let sent = (try? socket.reply(to: request, with: request.body)) ?? false
        shared.statistics.withLock { s in
          if sent { s.requestsServed += 1 } else { s.repliesDropped += 1 }
        }
      }
      whenConnectionEnds(socket) { socket, state in shared.ended(socket, state) }
    }
  }

  /// What the server has done so far.
  public var statistics: Statistics { shared.statistics.withLock { $0 } }
  /// Requests answered so far.
  public var requestsServed: Int { statistics.requestsServed }
  /// Connections currently open.
  public var connectionCount: Int { shared.connections.withLock { $0.count } }
  /// The open connections' sockets (for inspection; the server owns them).
  public var connections: [RepSocket] { shared.connections.withLock { Array($0.values) } }
  public var localAddress: SocketAddress { listener.localAddress }

  /// Stops listening (removing an `ipc://` socket file) and closes every
  /// connection.
  public func close() {
    try? listener.close()
    SPAddress.removeSocketFile(of: listener.localAddress)
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
