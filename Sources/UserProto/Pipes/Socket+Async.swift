public import Logging

/// async/await on top of the non-blocking calls. Waiting is driven by the
/// same state changes that drive the fd, so it never polls.
extension Socket {
  /// Sends a message, suspending while the send queue is full.
  /// - Throws: what ``trySend(_:)`` throws, or `CancellationError`.
  public func send(_ message: [UInt8]) async throws {
    while true {
      try Task.checkCancellation()
      if try trySend(message) { return }
      await core.wait(for: .send)
    }
  }

  /// Receives the next message, suspending until one arrives; nil at
  /// end-of-stream.
  /// - Throws: the socket's error (once), ``SocketError/closed``, or
  ///   `CancellationError`.
  public func receive() async throws -> [UInt8]? {
    while true {
      try Task.checkCancellation()
      switch try tryReceive() {
      case .message(let message): return message
      case .endOfStream: return nil
      case .wouldBlock: await core.wait(for: .receive)
      }
    }
  }

  /// The received messages as an async sequence, ending at end-of-stream.
  /// Backpressure: messages stay queued until taken, and the pipes stop
  /// reading at the receive high watermark.
  public var messages: SocketMessages<Handler> { SocketMessages(socket: self) }
}

/// The received messages of a ``Socket``.
public struct SocketMessages<Handler: SocketHandler>: AsyncSequence, Sendable {
  /// A message's bytes.
  public typealias Element = [UInt8]
  let socket: Socket<Handler>

  /// Receives the messages one at a time.
  public struct AsyncIterator: AsyncIteratorProtocol {
    let socket: Socket<Handler>
    /// The next message, suspending until one arrives; nil at end-of-stream.
    public mutating func next() async throws -> [UInt8]? { try await socket.receive() }
  }

  /// An iterator over the socket's received messages.
  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
}

// MARK: Scoped lifetimes

extension Socket {
  /// Closes gracefully (``close()``) and returns once the socket has
  /// finished: its queued output handed to the kernel and its pipes closed
  /// (or ``SocketOptions/closeLinger`` passed), or the loop stopped. On a
  /// socket already closed it only waits.
  public func closeAndWait() async {
    try? close()
    await core.waitFinished()
  }

  /// Returns once the socket has finished: closed (by ``close()`` or
  /// ``abort()``, from any thread) and every pipe, dialer, listener and
  /// timer of it gone, or its loop stopped. Does not close it; not
  /// cancellable (a task that must stop waiting aborts the socket).
  public func waitUntilFinished() async {
    await core.waitFinished()
  }

  /// Aborts (``abort()``) and returns once the socket has finished.
  public func abortAndWait() async {
    abort()
    await core.waitFinished()
  }

  /// Makes a socket, runs `body` with it, and closes it on every way out:
  /// gracefully when `body` returns (its sends go out first), at once when
  /// `body` throws or its task is cancelled. Returns once the socket has
  /// finished, so no pipe, fd or timer of it outlives the call. The
  /// default for async code, as SwiftNIO's `executeThenClose`. As with
  /// ``close()``, the dialers stop at once: what waits for a pipe that
  /// never came up is dropped.
  /// - Throws: what the socket's initializer or `body` throws.
  public static func withSocket<Result>(
    _ handler: sending Handler, loop: EventLoop, options: SocketOptions = SocketOptions(),
    logger: Logger = DisabledLogger.shared, metrics: SocketMetrics? = nil,
    _ body: (Socket<Handler>) async throws -> Result
  ) async throws -> Result {
    let socket = try Socket(handler, loop: loop, options: options, logger: logger, metrics: metrics)
    let result: Result
    do {
      result = try await body(socket)
    } catch {
      await socket.abortAndWait()
      throw error
    }
    if Task.isCancelled { await socket.abortAndWait() } else { await socket.closeAndWait() }
    return result
  }
}
