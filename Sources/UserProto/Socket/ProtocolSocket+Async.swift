/// async/await on top of the non-blocking core. Waiting is driven by the
/// same state changes that drive the mask fd, so it never polls.
extension ProtocolSocket {
  /// Resumes every waiter; each re-checks its condition.
  final func wakeWaiters() {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      let all = Array(s.receiveWaiters.values) + Array(s.sendWaiters.values)
      s.receiveWaiters = [:]
      s.sendWaiters = [:]
      return all
    }
    for waiter in waiters { waiter.resume() }
  }

  private enum Wait { case receive, send }

  private final func wait(for kind: Wait) async {
    let id = state.withLock { s -> UInt64 in
      s.nextWaiter += 1
      return s.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let ready = state.withLock { s -> Bool in
          if Task.isCancelled || s.closedByUser { return true }
          switch kind {
          case .receive:
            if s.readiness.contains(.readable) { return true }
            s.receiveWaiters[id] = continuation
          case .send:
            if s.readiness.contains(.writable) { return true }
            s.sendWaiters[id] = continuation
          }
          return false
        }
        if ready { continuation.resume() }
      }
    } onCancel: {
      let waiter = state.withLock { s in
        s.receiveWaiters.removeValue(forKey: id) ?? s.sendWaiters.removeValue(forKey: id)
      }
      waiter?.resume()
    }
  }

  /// Sends a message, suspending while the transmit queue is full.
  /// - Throws: what ``trySend(_:)`` throws, or `CancellationError`.
  public final func send(_ message: [UInt8]) async throws {
    while true {
      try Task.checkCancellation()
      if try trySend(message) { return }
      await wait(for: .send)
    }
  }

  /// Receives the next message, suspending until one arrives. Returns nil
  /// at end-of-stream.
  /// - Throws: the connection's error (once), ``SocketError/closed``, or
  ///   `CancellationError`.
  public final func receive() async throws -> [UInt8]? {
    while true {
      try Task.checkCancellation()
      switch try tryReceive() {
      case .message(let message): return message
      case .endOfStream: return nil
      case .wouldBlock: await wait(for: .receive)
      }
    }
  }

  /// The incoming messages as an async sequence, ending at end-of-stream.
  /// Backpressure: messages stay in the receive queue until taken, and the
  /// transport stops reading at the receive high watermark.
  public final var messages: Messages { Messages(socket: self) }

  /// An async sequence of received messages.
  public struct Messages: AsyncSequence, Sendable {
    /// A message's bytes.
    public typealias Element = [UInt8]
    let socket: ProtocolSocket

    /// Receives the messages one at a time.
    public struct AsyncIterator: AsyncIteratorProtocol {
      let socket: ProtocolSocket
      /// The next message, suspending until one arrives; nil at end-of-stream.
      public mutating func next() async throws -> [UInt8]? { try await socket.receive() }
    }

    /// An iterator over the socket's received messages.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
  }
}
