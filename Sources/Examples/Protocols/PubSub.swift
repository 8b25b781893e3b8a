import Synchronization
public import UserProto

/// SP PUB (pub0), one connection to one subscriber. A subscriber never
/// sends: anything it sends fails the connection (nng closes it too).
public final class PubSocket: SPSocket, @unchecked Sendable {
  public override var protocolID: ProtocolID { .pub }
  public override var peerProtocolID: ProtocolID { .sub }
  public override func receivedMessage(_ message: [UInt8]) throws {
    throw SocketError.protocolViolation("a SUB peer sent a message")
  }
}

/// SP SUB (sub0): receives published messages and keeps those whose start
/// matches one of its subscriptions (an empty prefix matches all; with no
/// subscription nothing is kept). Subscriptions change at run time from any
/// thread; filtering happens on this side, as SP specifies.
public final class SubSocket: SPSocket, @unchecked Sendable {
  public override var protocolID: ProtocolID { .sub }
  public override var peerProtocolID: ProtocolID { .pub }
  public override var sendsMessages: Bool { false }

  private let filter = Mutex<(prefixes: [[UInt8]], filtered: Int)>(([], 0))

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
    let keep = filter.withLock { f -> Bool in
      let match = f.prefixes.contains { message.starts(with: $0) }
      if !match { f.filtered += 1 }
      return match
    }
    if keep { try deliver(message) }
  }
}

/// An SP publisher: a PUB listener that sends each published message to
/// every connected subscriber without ever blocking.
///
/// Drop policy: each subscriber has a bounded queue (its connection's send
/// high watermark, 256 KiB by default). When a subscriber's queue is full the
/// new message is dropped for that subscriber only, and counted; other
/// subscribers and the publisher go on. nng's pub0 instead keeps 16 messages
/// per subscriber and drops the oldest, without telling anyone.
public final class Publisher: Sendable {
  public let listener: ProtocolListener<PubSocket>
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
    let subscribers = Mutex<[Subscriber]>([])
    let totals = Mutex<(published: Int, delivered: Int, dropped: Int)>((0, 0, 0))
  }
  private let shared = Shared()

  public init(on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions()) throws {
    let shared = self.shared
    listener = try ProtocolListener<PubSocket>(
      on: address, loop: loop, options: options, queuesConnections: false
    ) { socket in
      shared.subscribers.withLock { $0.append(Subscriber(socket)) }
      socket.observeStateChanges { state in
        switch state {
        // SP has no half-close: a peer that finished sending has gone.
        case .closed, .failed, .peerFinishedSending:
          shared.subscribers.withLock { $0.removeAll { $0.socket === socket } }
          socket.abort()
        default: break
        }
      }
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
  public var subscriberCount: Int { shared.subscribers.withLock { $0.count } }
  public var localAddress: SocketAddress { listener.localAddress }

  public func close() {
    try? listener.close()
    let all = shared.subscribers.withLock { s -> [Subscriber] in
      defer { s = [] }
      return s
    }
    for subscriber in all { subscriber.socket.abort() }
  }
}
