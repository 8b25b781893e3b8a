public import UserProto

/// A SUB v0 socket: `Socket<Sub0Handler>`.
public typealias Sub0Socket = Socket<Sub0Handler>

/// SP SUB v0 (NNG's sub0, nanomsg's NN_SUB) on a socket with pipes.
///
/// Receives what its publishers send and delivers the messages that start
/// with one of its subscriptions (byte prefixes; the empty prefix matches
/// everything; with no subscription nothing is delivered). The prefix is
/// compared in place, so a filtered message is never copied. Subscriptions
/// change at run time through `Socket.withHandler(_:)`; a change applies
/// to messages parsed after it (messages already queued for the application
/// stay). SUB sends nothing: ``sendsMessages`` is false.
///
/// ```swift
/// let sub = try Socket(Sub0Handler(), loop: loop)
/// try sub.dial("tcp://127.0.0.1:5556")
/// try await sub.withHandler { h, _ in h.subscribe("news") }
/// for try await message in sub.messages { print(message) }
/// ```
public final class Sub0Handler: SocketHandler {
  /// False: a SUB socket sends nothing, and a send throws.
  public static var sendsMessages: Bool { false }

  /// The SP layer: handshakes and framing per pipe.
  public let pipes: SPPipes
  /// The subscribed prefixes, in the order added.
  public private(set) var subscriptions: [[UInt8]] = []

  /// What the handler has done so far.
  public struct Statistics: Sendable, Hashable {
    /// Messages delivered to the application.
    public var delivered = 0
    /// Messages no subscription matched (dropped).
    public var filtered = 0
  }
  /// The handler's counters so far (read them on the loop, through `withHandler`).
  public private(set) var statistics = Statistics()

  /// A SUB v0 handler with these prefixes subscribed; a pipe whose publisher sends no SP header
  /// within `headerTimeout` fails.
  public init(subscriptions: [[UInt8]] = [], headerTimeout: Duration = SPPipes.defaultHeaderTimeout) {
    pipes = SPPipes(.sub0, peer: .pub0, headerTimeout: headerTimeout)
    for prefix in subscriptions { subscribe(prefix) }
  }

  /// Adds a prefix (nothing if it is there already).
  public func subscribe(_ prefix: [UInt8]) {
    if !subscriptions.contains(prefix) { subscriptions.append(prefix) }
  }
  /// Adds the UTF-8 bytes of `prefix` as a prefix (nothing if it is there already).
  public func subscribe(_ prefix: String) { subscribe(Array(prefix.utf8)) }

  /// Removes a prefix; false if it was not subscribed.
  @discardableResult
  public func unsubscribe(_ prefix: [UInt8]) -> Bool {
    guard let index = subscriptions.firstIndex(of: prefix) else { return false }
    subscriptions.remove(at: index)
    return true
  }
  /// Removes the UTF-8 bytes of `prefix`; false if they were not subscribed.
  @discardableResult
  public func unsubscribe(_ prefix: String) -> Bool { unsubscribe(Array(prefix.utf8)) }

  /// Starts the SP handshake: writes this side's header and starts the header timer (a `udp://` pipe is closed).
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipes.added(pipe, context: context) }

  /// Delivers the messages that start with a subscribed prefix; counts and drops the others.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try pipes.received(&input, from: pipe, context: context) {
      (input: inout InboundBuffer, length: Int, _: SocketPipe) throws(SocketError) in
      guard matches(input, length: length) else {
        statistics.filtered += 1
        return
      }
      try context.deliver(input.readBytes(length) ?? [])
      statistics.delivered += 1
    }
  }

  /// Closes the pipe, or fails it when the peer stopped in the middle of its SP header or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    try pipes.reachedEnd(pipe, input: input)
  }

  /// Forgets the pipe.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    pipes.removed(pipe, error: error)
  }

  /// Fails the pipe whose SP header did not arrive within the header timeout.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) { _ = pipes.timerFired(timer) }

  private func matches(_ input: InboundBuffer, length: Int) -> Bool {
    subscriptions.contains { prefix in
      guard prefix.count <= length else { return false }
      for (i, byte) in prefix.enumerated() where input[i] != byte { return false }
      return true
    }
  }
}
