import Locking
import Synchronization
public import UserProto

/// SP PUB (pub0), one connection to one subscriber. A subscriber never
/// sends: anything it sends fails the connection (nng closes it too).
public final class PubSocket: SPSocket, SPProtocolIdentity, @unchecked Sendable {
  public static let protocolID = ProtocolID.pub
  public static let peerProtocolID = ProtocolID.sub
  public override func receivedMessage(_ message: [UInt8]) throws {
    throw SocketError.protocolViolation("a SUB peer sent a message")
  }
}

/// SP SUB (sub0): receives published messages and keeps those whose start
/// matches one of its subscriptions (an empty prefix matches all; with no
/// subscription nothing is kept). Subscriptions change at run time from any
/// thread; filtering happens on this side, as SP specifies.
public final class SubSocket: SPSocket, SPProtocolIdentity, @unchecked Sendable {
  public static let protocolID = ProtocolID.sub
  public static let peerProtocolID = ProtocolID.pub
  public override var sendsMessages: Bool { false }

  private let filter = Lock<(prefixes: [[UInt8]], filtered: Int)>(([], 0))

  public func subscribe(_ prefix: [UInt8]) {
    filter.withLock { if !$0.prefixes.contains(prefix) { $0.prefixes.append(prefix) } }
  }
  public func subscribe(_ prefix: String) { subscribe(Array(prefix.utf8)) }
  public func unsubscribe(_ prefix: [UInt8]) { filter.withLock { $0.prefixes.removeAll { $0 == prefix } } }
  public func unsubscribe(_ prefix: String) { unsubscribe(Array(prefix.utf8)) }
  public var subscriptions: [[UInt8]] { filter.withLock { $0.prefixes } }
  /// Messages dropped because no subscription matched.
  public var filteredMessages: Int { filter.withLock { $0.filtered } }

  public override func receivedMessage(_ message: [UInt8]) throws {
    if handlesMessagesOnLoop {
      // No queue: the handler runs inside deliver and may change the
      // subscriptions, so the lock is not held there.
      if filter.withLock({ Self.matches(message, &$0) }) { try deliver(message) }
      return
    }
    // Queued under the lock: once unsubscribe returns, no message that
    // only the removed prefix matched is queued after it.
    try filter.withLock { f throws(SocketError) in
      guard Self.matches(message, &f) else { return }
      try deliver(message)
    }
  }

  private static func matches(_ message: [UInt8], _ f: inout (prefixes: [[UInt8]], filtered: Int)) -> Bool {
    let match = f.prefixes.contains { message.starts(with: $0) }
    if !match { f.filtered += 1 }
    return match
  }
}

/// An SP publisher: a PUB listener that sends each published message to
/// every connected subscriber without ever blocking.
///
/// A subscriber counts (and gets messages) once its SP header has been
/// accepted. Drop policy: each subscriber has a bounded queue (its
/// connection's send high watermark, 256 KiB by default). When a
/// subscriber's queue is full the new message is dropped for that subscriber
/// only, and counted; other subscribers and the publisher go on. nng's pub0
/// instead keeps 16 messages per subscriber and drops the oldest, without
/// telling anyone. Connections that fail are counted and their reasons kept
/// in ``failures``.
public final class Publisher: Sendable {
  public let listener: ProtocolListener<PubSocket>
  /// Connections that ended in failure, and why.
  public let failures: FailureLog
  /// One connected subscriber and its counters.
  private final class Subscriber: Sendable {
    let socket: PubSocket
    let delivered = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)
    init(_ socket: PubSocket) { self.socket = socket }
  }
  private final class Shared: Sendable {
    /// Copied out (one reference) by each publish; changed on connect and
    /// disconnect only.
    let subscribers = Lock<[Subscriber]>([])
    let totals = Lock<(published: Int, delivered: Int, dropped: Int)>((0, 0, 0))
    /// Every open connection, subscribed or still in its handshake.
    let connections = Lock<[ObjectIdentifier: PubSocket]>([:])
    let failures: FailureLog
    init(_ failures: FailureLog) { self.failures = failures }

    /// The connection ended: forget it (first time only) and count why.
    func ended(_ socket: PubSocket, _ state: ConnectionState) {
      guard connections.withLock({ $0.removeValue(forKey: ObjectIdentifier(socket)) }) != nil else { return }
      subscribers.withLock { $0.removeAll { $0.socket === socket } }
      if case .failed(let error) = state { failures.record(error) }
      socket.abort()
    }
  }
  private let shared: Shared

  /// Listens on `address`, with SP/IPC framing on a Unix-domain address. A
  /// peer has `headerTimeout` to send its SP header.
  public init(
    on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions(),
    headerTimeout: Duration = SPSocket.headerTimeout
  ) throws {
    let failures = FailureLog()
    self.failures = failures
    let shared = Shared(failures)
    self.shared = shared
    let framing = SPSocket.Framing(for: address)
    listener = try ProtocolListener<PubSocket>(
      on: address, loop: loop, options: options, queuesConnections: false
    ) { socket in
      socket.framing = framing
      socket.peerHeaderTimeout = headerTimeout
      shared.connections.withLock { $0[ObjectIdentifier(socket)] = socket }
      // A subscriber only once its header says it is one.
      socket.whenHandshakeCompletes { socket in
        guard let socket = socket as? PubSocket else { return }
        shared.subscribers.withLock { $0.append(Subscriber(socket)) }
      }
      whenConnectionEnds(socket) { socket, state in shared.ended(socket, state) }
    }
  }

  /// What one publish did.
  public struct Outcome: Sendable, Hashable {
    public var delivered: Int
    public var dropped: Int
  }

  /// Queues `message` for every subscriber; never blocks.
  @discardableResult
  public func publish(_ message: [UInt8]) -> Outcome {
    var outcome = Outcome(delivered: 0, dropped: 0)
    let subscribers = shared.subscribers.withLock { $0 }
    for subscriber in subscribers {
      if (try? subscriber.socket.trySend(message)) == true {
        subscriber.delivered.add(1, ordering: .relaxed)
        outcome.delivered += 1
      } else {
        subscriber.dropped.add(1, ordering: .relaxed)
        outcome.dropped += 1
      }
    }
    shared.totals.withLock {
      $0.published += 1
      $0.delivered += outcome.delivered
      $0.dropped += outcome.dropped
    }
    return outcome
  }

  @discardableResult
  public func publish(_ text: String) -> Outcome { publish(Array(text.utf8)) }

  /// Messages published, copies queued for subscribers, and copies dropped.
  public var statistics: (published: Int, delivered: Int, dropped: Int) { shared.totals.withLock { $0 } }
  /// Per connected subscriber: copies queued and dropped.
  public var subscriberStatistics: [(delivered: Int, dropped: Int)] {
    shared.subscribers.withLock {
      $0.map { ($0.delivered.load(ordering: .relaxed), $0.dropped.load(ordering: .relaxed)) }
    }
  }
  /// Subscribers whose header was accepted and whose connection is open.
  public var subscriberCount: Int { shared.subscribers.withLock { $0.count } }
  /// Open connections, including peers that have not sent their header yet.
  public var connectionCount: Int { shared.connections.withLock { $0.count } }
  /// The open connections' sockets (for inspection; the publisher owns them).
  public var connections: [PubSocket] { shared.connections.withLock { Array($0.values) } }
  public var localAddress: SocketAddress { listener.localAddress }

  /// Stops listening (removing an `ipc://` socket file) and closes every
  /// connection.
  public func close() {
    try? listener.close()
    SPAddress.removeSocketFile(of: listener.localAddress)
    shared.subscribers.withLock { $0 = [] }
    let all = shared.connections.withLock { c -> [PubSocket] in
      defer { c = [:] }
      return Array(c.values)
    }
    for socket in all { socket.abort() }
  }
}
