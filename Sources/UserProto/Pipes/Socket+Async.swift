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
  public typealias Element = [UInt8]
  let socket: Socket<Handler>

  public struct AsyncIterator: AsyncIteratorProtocol {
    let socket: Socket<Handler>
    public mutating func next() async throws -> [UInt8]? { try await socket.receive() }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
}
