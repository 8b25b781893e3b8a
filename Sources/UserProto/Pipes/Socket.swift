public import Logging
import MaskCore

/// A protocol socket as the application holds it: one pollable fd, and
/// message sends and receives that are safe from any thread.
///
/// The protocol is its `Handler`, which runs on the socket's event loop
/// (see ``SocketHandler``). The socket owns zero or more pipes: connections
/// it dials (`dial(_:reconnect:)`, re-dialed after a failure until the
/// socket closes) and connections accepted by listeners it starts
/// (`listen(_:)`), on as many addresses at once as wanted. Its fd
/// aggregates them:
///
/// - readable exactly when ``tryReceive()`` would not block: a message is
///   queued for the application, or end-of-stream or an error is pending;
/// - writable exactly when ``trySend(_:)`` would not block: the send queue
///   (messages the handler has not taken yet) is below its high watermark,
///   with hysteresis down to the low one, or the socket can no longer send,
///   so a send fails at once;
/// - error while an error is pending, until it is received; hangup once the
///   socket failed, or the stream finished and the write side is shut.
///
/// The fd's readiness is written only once ``fileDescriptor`` was read: a
/// socket used only through its methods and async API makes no mask-fd
/// syscalls.
public final class Socket<Handler: SocketHandler>: Sendable {
  let core: SocketCore

  /// The loop that runs the handler and the pipes.
  public var loop: EventLoop { core.loop }
  /// The buffer limits.
  public var options: SocketOptions { core.options }
  /// Unique within the process, never reused: the `socket.id` metadata of
  /// the socket's log lines.
  public var id: UInt64 { core.id }

  /// Creates a socket whose protocol is `handler` (handed over to the loop:
  /// the caller keeps no access to it; reach it with ``withHandler(_:)``).
  ///
  /// The socket logs its pipes coming and going, re-dials, accept failures
  /// and its close to `logger`, with the socket's ``id`` as `socket.id`
  /// (docs/logging.md); by default it logs nothing.
  ///
  /// With `metrics`, the socket also exports its ``statistics`` through
  /// swift-metrics, each metric with `("socket", "<id>")` among its
  /// dimensions (docs/metrics.md); by default (nil) it makes no metric.
  /// - Throws: ``SocketError/transport(_:)`` when the mask fd cannot be
  ///   made (EMFILE...).
  public init(
    _ handler: sending Handler, loop: EventLoop, options: SocketOptions = SocketOptions(),
    logger: Logger = DisabledLogger.shared, metrics: SocketMetrics? = nil
  ) throws(SocketError) {
    core = try SocketCore(handler: handler, loop: loop, options: options, logger: logger, metrics: metrics)
  }

  deinit {
    // Dropped without close(): end it at once on the loop (the loop's
    // tasks keep the core alive until then).
    if core.markClosed() { core.shutDown(graceful: false) }
  }

  /// The pollable descriptor: put it in poll/epoll/io_uring. Owned by the
  /// socket, closed by ``close()`` and ``abort()``. Reading it turns on the
  /// mask fd's updates.
  public var fileDescriptor: Int32 { core.handedOutDescriptor }

  /// The readiness the socket shows (what the fd reports once handed out).
  public var readiness: MaskEvents { core.shared.withLock { $0.readiness } }

  /// The socket's counters.
  public var statistics: SocketStatistics { core.shared.withLock { $0.statistics } }

  /// Pipes up now.
  public var pipeCount: Int { core.shared.withLock { $0.statistics.pipes } }

  /// True once ``close()`` or ``abort()`` was called.
  public var isClosed: Bool { core.shared.withLock { $0.closedByUser } }

  // MARK: Pipes

  /// Dials `url` (`tcp://127.0.0.1:5555`, `ipc:///tmp/x`, `udp://...`,
  /// `inproc://name`; see ``TransportURL``) and keeps a pipe to it: the
  /// first attempt starts at once, and after a failed attempt or a lost
  /// pipe the dialer re-dials after `reconnect`'s back-off, until the
  /// socket closes. Messages sent meanwhile wait in the send queue (the
  /// handler decides).
  /// - Throws: ``SocketError/badAddress(_:_:)``, ``SocketError/closed``.
  public func dial(_ url: String, reconnect: ReconnectPolicy = ReconnectPolicy()) throws(SocketError) {
    try dial(TransportURL(url, for: .dial), reconnect: reconnect)
  }

  /// Dials a parsed address, as `dial(_:reconnect:)` with a URL string does.
  public func dial(_ url: TransportURL, reconnect: ReconnectPolicy = ReconnectPolicy()) throws(SocketError) {
    try checkOpen()
    core.noteDatagramTransport(url)
    if case .inproc(let name) = url, let other = Inproc.loop(of: name), other !== loop {
      throw .notSupported("inproc://\(name) listens on another event loop; in-process peers share one loop")
    }
    let core = self.core
    do {
      try core.loop.enqueue {
        guard !core.closing, core.handler != nil else { return }
        let dialer = Dialer(url: url, policy: reconnect, core: core)
        core.dialers.append(dialer)
        dialer.start()
      }
    } catch {
      throw .closed
    }
  }

  /// Listens on `url` (`tcp://*:5555` or `tcp://:0` for every address, an
  /// ephemeral port with 0; `ipc://`, `udp://`, `inproc://`); accepted
  /// connections become pipes. Returns the bound address (with the port
  /// the kernel chose).
  /// - Throws: ``SocketError/badAddress(_:_:)``, ``SocketError/transport(_:)``
  ///   (EADDRINUSE...), ``SocketError/closed``.
  @discardableResult
  public func listen(_ url: String) throws(SocketError) -> TransportURL {
    try listen(TransportURL(url, for: .listen))
  }

  /// Listens on a parsed address, as `listen(_:)` with a URL string does.
  @discardableResult
  public func listen(_ url: TransportURL) throws(SocketError) -> TransportURL {
    try checkOpen()
    let listener = try PipeListener(url: url, core: core)
    let bound = listener.url
    core.noteDatagramTransport(bound)
    let core = self.core
    let box = LoopConfined(listener)
    do {
      try core.loop.enqueue {
        guard !core.closing, core.handler != nil else {
          box.value.close()
          return
        }
        core.listeners.append(box.value)
        box.value.start()
      }
    } catch {
      listener.close()
      throw .closed
    }
    return bound
  }

  private func checkOpen() throws(SocketError) {
    if core.shared.withLock({ $0.closedByUser }) { throw .closed }
  }

  // MARK: Messages

  /// Queues a message for the handler to send if the send queue has room;
  /// returns false when the send would block.
  /// - Throws: ``SocketError/closed`` after close, ``SocketError/writeShutdown``,
  ///   the pending error of a failed socket, ``SocketError/messageTooLarge(size:limit:)``
  ///   (above ``SocketOptions/maximumMessageSize``, or, once the socket dials
  ///   or listens on `udp://`, above the largest UDP datagram: 65,507 bytes
  ///   over IPv4, 65,527 over IPv6),
  ///   ``SocketError/notSupported(_:)``, or what the handler's
  ///   ``SocketHandler/validateSend(_:)`` throws. Nothing is queued then.
  @discardableResult
  public func trySend(_ message: [UInt8]) throws(SocketError) -> Bool { try core.trySend(message) }

  /// Takes the next message without blocking.
  /// - Throws: the pending error once (then `.endOfStream` follows), or
  ///   ``SocketError/closed`` after close.
  public func tryReceive() throws(SocketError) -> ReceiveResult { try core.tryReceive() }

  // MARK: The handler

  /// Runs `body` on the loop with the handler and its context, and returns
  /// its result: for a protocol's own API (subscribe to a topic, read a
  /// protocol statistic). What `body` delivers is committed when it returns.
  public func withHandler<T: Sendable>(
    _ body: @escaping @Sendable (Handler, SocketContext) throws -> T
  ) async throws -> T {
    let core = self.core
    return try await loop.submit { try Self.run(body, on: core) }
  }

  /// ``withHandler(_:)`` for synchronous code: blocks the calling thread
  /// until `body` has run on the loop (on the loop's thread it runs at once).
  public func withHandlerAndWait<T: Sendable>(
    _ body: @escaping @Sendable (Handler, SocketContext) throws -> T
  ) throws -> T {
    let core = self.core
    return try loop.submitAndWait { try Self.run(body, on: core) }
  }

  private static func run<T>(_ body: (Handler, SocketContext) throws -> T, on core: SocketCore) throws -> T {
    guard let handler = core.handler as? Handler else { throw SocketError.closed }
    var result: Result<T, any Error> = .failure(SocketError.closed)
    core.runHook { _, context in result = Result { try body(handler, context) } }
    core.offerSends()
    return try result.get()
  }

  // MARK: Closing

  /// Shuts down the write side: queued sends are handed to the handler,
  /// then every pipe's write side shuts after its output (half-close).
  /// Receiving goes on.
  public func shutdownWrite() throws(SocketError) {
    try core.updateThrowing { (s: inout HandleState) throws(SocketError) in
      if s.closedByUser { throw .closed }
      s.writeShut = true
    }
    let core = self.core
    try? core.loop.enqueue {
      core.drainSends()
      for pipe in core.pipes { pipe.transport?.shutdownWrite() }
    }
  }

  /// Closes gracefully: sends already accepted are handed to the handler,
  /// dialers and listeners stop, every pipe's write side shuts after its
  /// queued output, and the pipes close once their peers finish (or after
  /// ``SocketOptions/closeLinger``, 5 s by default). The socket is closed
  /// for the application at once.
  /// - Throws: ``SocketError/closed`` if it already was.
  public func close() throws(SocketError) {
    guard core.markClosed() else { throw .closed }
    core.shutDown(graceful: true)
  }

  /// Closes at once, dropping queued messages and every pipe.
  public func abort() {
    guard core.markClosed() else { return }
    core.shutDown(graceful: false)
  }
}
