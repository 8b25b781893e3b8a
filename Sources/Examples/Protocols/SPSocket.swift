import Dispatch
import Glibc
import Locking
public import UserProto

/// The nanomsg scalability protocols' stream mappings, shared by every SP
/// socket type: SP/TCP, and SP/IPC over Unix-domain sockets.
///
/// Both sides send an 8-byte header at once (`00 'S' 'P' 00`, the 16-bit
/// big-endian protocol id, two zero bytes) without waiting for the peer's,
/// then exchange messages. Over TCP each message is prefixed by its 64-bit
/// big-endian length; over IPC by a message type byte (1) and then that
/// length. A wrong header (magic, version, reserved bytes or an incompatible
/// protocol id) fails the connection with a clear error, as does a frame
/// longer than the maximum message size; nothing else is affected.
///
/// A concrete SP socket type subclasses it and conforms to
/// ``SPProtocolIdentity``, which gives its protocol ids.
open class SPSocket: ProtocolSocket, @unchecked Sendable {
  /// SP protocol ids.
  public enum ProtocolID: UInt16, Sendable {
    case pair = 0x10
    case pub = 0x20
    case sub = 0x21
    case req = 0x30
    case rep = 0x31
  }

  /// How messages are delimited on the stream.
  public enum Framing: Sendable, Hashable {
    /// SP/TCP: a 64-bit big-endian length, then the message.
    case tcp
    /// SP/IPC (nng and nanomsg `ipc://`): a message type byte (1), then the
    /// 64-bit big-endian length, then the message.
    case ipc

    /// The framing SP peers use on an address of this family: IPC on
    /// Unix-domain sockets, TCP otherwise.
    public init(for address: SocketAddress) {
      self = address.family == AF_UNIX ? .ipc : .tcp
    }

    /// Bytes before each message's body.
    var prefixLength: Int { self == .ipc ? 9 : 8 }
  }

  /// This socket's protocol id (its type's ``SPProtocolIdentity/protocolID``).
  public final let protocolID: ProtocolID
  /// The only protocol id this socket accepts from its peer (its type's
  /// ``SPProtocolIdentity/peerProtocolID``).
  public final let peerProtocolID: ProtocolID

  /// Creates an unconnected socket of a type that conforms to
  /// ``SPProtocolIdentity``, which gives the protocol ids.
  /// - Throws: ``SocketError/notSupported(_:)`` for a subclass that does not
  ///   conform (it has no protocol id to send), and what the base class throws.
  public required init(loop: EventLoop, options: SocketOptions = SocketOptions()) throws {
    guard let identity = Self.self as? any SPProtocolIdentity.Type else {
      throw SocketError.notSupported(
        "\(Self.self) has no SP protocol id: an SPSocket subclass must conform to SPProtocolIdentity")
    }
    protocolID = identity.protocolID
    peerProtocolID = identity.peerProtocolID
    try super.init(loop: loop, options: options)
  }

  private final var buffer: [UInt8] = []
  private final var headerSeen = false
  private final var headerTimer: ProtocolTimer?
  /// Loop-confined: called once the peer's header is accepted.
  private final var handshakeHandler: ((SPSocket) -> Void)?
  private final let settings = Lock<(framing: Framing, headerTimeout: Duration)>((.tcp, SPSocket.headerTimeout))
  /// How long the peer has to send its header by default (nng waits 10 s).
  public static let headerTimeout: Duration = .seconds(10)

  /// The framing this connection uses. Set it before the connection starts:
  /// ``dial(_:loop:options:)`` and the servers do.
  public final var framing: Framing {
    get { settings.withLock { $0.framing } }
    set { settings.withLock { $0.framing = newValue } }
  }

  /// How long the peer has to send its header once connected (default
  /// ``headerTimeout``); one too long for the loop's clock (over about 584
  /// years, `.seconds(Int64.max)` say) waits for ever. Set it before the
  /// connection starts.
  public final var peerHeaderTimeout: Duration {
    get { settings.withLock { $0.headerTimeout } }
    set { settings.withLock { $0.headerTimeout = newValue } }
  }

  /// Connects to `address` with the framing SP peers use there (IPC on a
  /// Unix-domain address, TCP otherwise). The framing is set before the
  /// connection starts, so no byte is parsed with the wrong one: from a task
  /// on the loop, which the calling thread waits for (a loop round trip).
  public static func dial(
    _ address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions(),
    headerTimeout: Duration = SPSocket.headerTimeout
  ) throws -> Self {
    let framing = Framing(for: address)
    // `connect` attaches the connection in a task it queues on the loop; made
    // from a task on the loop, the settings below come first.
    let make: @Sendable () throws -> Self = {
      let socket = try Self.connect(to: address, loop: loop, options: options)
      socket.framing = framing
      socket.peerHeaderTimeout = headerTimeout
      return socket
    }
    if loop.inEventLoop { return try make() }
    if framing == .tcp && headerTimeout == SPSocket.headerTimeout {
      return try connect(to: address, loop: loop, options: options)  // the defaults: nothing to set
    }
    let outcome = OutcomeBox<Self>()
    try loop.execute { outcome.set(Result { try make() }) }
    return try outcome.wait()
  }

  /// Calls `handler` on the loop once the peer's SP header is accepted (a
  /// server counts a peer from then on). Call it on the loop before the
  /// connection starts (a listener's `configure` closure).
  public final func whenHandshakeCompletes(_ handler: @escaping (SPSocket) -> Void) {
    handshakeHandler = handler
  }

  /// The 8 header bytes this side sends.
  public final var header: [UInt8] {
    let id = protocolID.rawValue
    return [0x00, 0x53, 0x50, 0x00, UInt8(id >> 8), UInt8(id & 0xff), 0x00, 0x00]
  }

  open override func connectionStateChanged(_ state: ConnectionState) {
    switch state {
    case .connected:
      writeRaw(header)
      headerTimer = try? startTimer(after: peerHeaderTimeout)
    case .failed, .closed:
      // The connection is over: nothing may fail it again later.
      headerTimer?.cancel()
      headerTimer = nil
    default: break
    }
  }

  open override func timerFired(_ timer: ProtocolTimer) {
    guard timer === headerTimer, !headerSeen else { return }
    headerTimer = nil
    switch connectionState {
    case .failed, .closed: return
    default: fail(.protocolViolation("no SP header from the peer within \(peerHeaderTimeout)"))
    }
  }

  public final override func received(_ bytes: [UInt8]) throws {
    buffer += bytes
    if !headerSeen {
      guard buffer.count >= 8 else { return }
      try checkHeader(Array(buffer[0..<8]))
      headerSeen = true
      headerTimer?.cancel()
      headerTimer = nil
      buffer.removeFirst(8)
      handshakeHandler?(self)
      handshakeHandler = nil
    }
    let framing = self.framing
    let prefix = framing.prefixLength
    var offset = 0
    defer { if offset > 0 { buffer.removeFirst(offset) } }
    while buffer.count - offset >= prefix {
      if framing == .ipc, buffer[offset] != 0x01 {
        throw SocketError.protocolViolation("SP/IPC message type \(buffer[offset]), expected 1")
      }
      var length: UInt64 = 0
      for i in (prefix - 8)..<prefix { length = length << 8 | UInt64(buffer[offset + i]) }
      if length > UInt64(options.maximumMessageSize) {
        throw SocketError.messageTooLarge(
          size: length > UInt64(Int.max) ? Int.max : Int(length), limit: options.maximumMessageSize)
      }
      // Subtracted, not added: with no size limit (Int.max) a length near
      // Int.max would overflow the sum.
      guard buffer.count - offset - prefix >= Int(length) else { return }
      let end = offset + prefix + Int(length)
      let message = Array(buffer[(offset + prefix)..<end])
      offset = end
      try receivedMessage(message)
    }
  }

  private final func checkHeader(_ h: [UInt8]) throws {
    guard h[0] == 0x00, h[1] == 0x53, h[2] == 0x50, h[3] == 0x00 else {
      throw SocketError.protocolViolation("not an SP peer: header \(hex(h))")
    }
    guard h[6] == 0, h[7] == 0 else {
      throw SocketError.protocolViolation("SP header with non-zero reserved bytes: \(hex(h))")
    }
    let id = UInt16(h[4]) << 8 | UInt16(h[5])
    guard id == peerProtocolID.rawValue else {
      let name = ProtocolID(rawValue: id).map { "\($0)".uppercased() } ?? "unknown"
      throw SocketError.protocolViolation(
        "incompatible SP peer: protocol 0x\(String(id, radix: 16)) (\(name)), \(protocolID) needs 0x\(String(peerProtocolID.rawValue, radix: 16)) (\("\(peerProtocolID)".uppercased()))"
      )
    }
  }

  open override func receivedEndOfStream() throws {
    // A frame (or the header) cut short is an error, not a clean end.
    if let truncation = truncation() { throw SocketError.protocolViolation(truncation) }
  }

  /// What a close now would cut short, if anything.
  private final func truncation() -> String? {
    guard !buffer.isEmpty else { return nil }
    guard headerSeen else { return "the peer closed after \(buffer.count) of the 8 SP header bytes" }
    let prefix = framing.prefixLength
    guard buffer.count >= prefix else {
      return "the peer closed mid-frame after \(buffer.count) of the \(prefix) frame prefix bytes"
    }
    var length: UInt64 = 0
    for i in (prefix - 8)..<prefix { length = length << 8 | UInt64(buffer[i]) }
    return "the peer closed mid-frame after \(buffer.count) of \(UInt64(prefix) + length) bytes"
  }

  /// One SP message (including any protocol header such as a request id)
  /// arrived. The default delivers it as is.
  open func receivedMessage(_ message: [UInt8]) throws {
    try deliver(message)
  }

  /// Frames one SP message body (including its protocol header).
  public final func frame(_ body: [UInt8]) -> [UInt8] {
    let n = UInt64(body.count)
    var out = [UInt8]()
    out.reserveCapacity(9 + body.count)
    if framing == .ipc { out.append(0x01) }
    for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: n >> UInt64(shift))) }
    out += body
    return out
  }

  open override func encode(_ message: [UInt8]) throws -> [UInt8] { frame(message) }
}

/// The protocol ids of an SP socket type: what it sends in its header and
/// the only id it accepts in its peer's. Every concrete ``SPSocket`` subclass
/// conforms; one that does not cannot be created (its initializer throws).
public protocol SPProtocolIdentity: SPSocket {
  /// This socket type's protocol id.
  static var protocolID: SPSocket.ProtocolID { get }
  /// The only protocol id this socket type accepts from its peer.
  static var peerProtocolID: SPSocket.ProtocolID { get }
}

/// A result handed from the loop to a waiting thread.
private final class OutcomeBox<T>: @unchecked Sendable {
  private var result: Result<T, any Error>?
  private let lock = Lock<Void>(())
  private let ready = DispatchSemaphore(value: 0)

  func set(_ result: Result<T, any Error>) {
    lock.withLock { _ in self.result = result }
    ready.signal()
  }

  func wait() throws -> T {
    ready.wait()
    return try lock.withLock { _ in result! }.get()
  }
}

func hex(_ bytes: [UInt8]) -> String {
  bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined(separator: " ")
}

extension SPSocket.ProtocolID: CustomStringConvertible {
  public var description: String {
    switch self {
    case .pair: "pair"
    case .pub: "pub"
    case .sub: "sub"
    case .req: "req"
    case .rep: "rep"
    }
  }
}

/// Calls `ended` when `socket`'s connection is over: closed, failed, or the
/// peer finished sending (SP has no half-close, so a peer that stopped
/// sending has gone). The socket keeps the closure, so it holds the socket
/// weakly; otherwise neither would ever be freed.
func whenConnectionEnds<S: SPSocket>(_ socket: S, _ ended: @escaping (S, ConnectionState) -> Void) {
  socket.observeStateChanges { [weak socket] state in
    guard let socket else { return }
    switch state {
    case .closed, .failed, .peerFinishedSending: ended(socket, state)
    default: break
    }
  }
}
