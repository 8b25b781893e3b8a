import Glibc

@testable public import UserProto

/// What a ``Socket`` shows and what its calls would do, taken at one
/// instant on the loop (nothing changes the state while it is taken).
///
/// The socket's contract (docs on ``Socket``): its fd is readable exactly
/// when ``Socket/tryReceive()`` would not block, and writable exactly when
/// ``Socket/trySend(_:)`` of a message it accepts would not block. The
/// probe answers both questions without changing anything: the receive on
/// a copy of the socket's state (the same `takeNext` that `tryReceive`
/// runs), the send with the checks `trySend` makes, in its order.
public struct ReadinessProbe: CustomStringConvertible {
  /// The readiness the state gives (``Socket/readiness``).
  public var readable: Bool
  public var writable: Bool
  /// What poll(2) reports on the socket's fd; nil once the socket is closed
  /// (its fd is closed with it, and the number may be reused).
  public var polledReadable: Bool?
  public var polledWritable: Bool?
  /// Whether a receive, or a send of a message the socket accepts, would
  /// block now.
  public var receiveWouldBlock: Bool
  public var sendWouldBlock: Bool
  /// ``Socket/close()`` or ``Socket/abort()`` was called: receives throw
  /// ``SocketError/closed``, and there is no fd left to show anything.
  public var closed: Bool

  public var description: String {
    "readable \(readable) writable \(writable), poll in \(polledReadable.map { "\($0)" } ?? "-") "
      + "out \(polledWritable.map { "\($0)" } ?? "-"), receive blocks \(receiveWouldBlock), "
      + "send blocks \(sendWouldBlock), closed \(closed)"
  }

  /// Checks the readiness invariant (`context` says where, for the report).
  public func check(_ context: @autoclosure () -> String) {
    guard !closed else { return }
    fuzzCheck(readable == !receiveWouldBlock, "readable must mean a receive would not block: \(self) (\(context()))")
    fuzzCheck(writable == !sendWouldBlock, "writable must mean a send would not block: \(self) (\(context()))")
    fuzzCheck(
      polledReadable == readable && polledWritable == writable,
      "the fd must show the socket's readiness: \(self) (\(context()))")
  }
}

/// On the loop: takes a ``ReadinessProbe`` of `socket`. Reading the fd
/// number turns the mask fd's updates on (the socket writes its readiness
/// only once its fd was handed out); the targets read it at creation.
public func probe<H>(_ socket: Socket<H>) -> ReadinessProbe {
  let core = socket.core
  var result = core.shared.withLock { s -> ReadinessProbe in
    var copy = s
    let receiveBlocks: Bool
    if case .success(.wouldBlock) = copy.takeNext() { receiveBlocks = true } else { receiveBlocks = false }
    let sendBlocks = (try? s.checkCanSend()) != nil && s.sendsMessages && !s.sendWouldNotBlock
    let readiness = s.readiness
    return ReadinessProbe(
      readable: readiness.contains(.readable), writable: readiness.contains(.writable), polledReadable: nil,
      polledWritable: nil, receiveWouldBlock: receiveBlocks, sendWouldBlock: sendBlocks, closed: s.closedByUser)
  }
  if !result.closed {
    var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN | POLLOUT), revents: 0)
    let ready = poll(&entry, 1, 0)
    fuzzCheck(ready >= 0, "poll(2) on the socket's fd failed: errno \(errno)")
    result.polledReadable = entry.revents & Int16(POLLIN) != 0
    result.polledWritable = entry.revents & Int16(POLLOUT) != 0
  }
  return result
}

/// On the loop: checks the socket's bookkeeping against its queues: the
/// receive queue's byte count is the sum of its messages (each plus the
/// per-message cost), no count is negative, and the pipe count the
/// statistics show is the pipes the handler sees.
public func checkAccounting<H>(_ socket: Socket<H>, _ context: @autoclosure () -> String) {
  let core = socket.core
  let pipes = core.pipes
  let (receiveBytes, queued, sendBytes, statisticsPipes) = core.shared.withLock { s -> (Int, Int, Int, Int) in
    var copy = s.receiveQueue
    var total = 0
    while let message = copy.popFirst() { total += message.count + SocketOptions.perMessageCost }
    return (s.receiveBytes, total, s.sendBytes, s.statistics.pipes)
  }
  fuzzCheck(receiveBytes == queued, "receive queue bytes \(receiveBytes), its messages make \(queued) (\(context()))")
  fuzzCheck(sendBytes >= 0, "send queue bytes \(sendBytes) (\(context()))")
  fuzzCheck(statisticsPipes == pipes.count, "statistics show \(statisticsPipes) pipes, the handler \(pipes.count)")
  for pipe in pipes {
    fuzzCheck(pipe.queuedOutputBytes >= 0, "\(pipe) has \(pipe.queuedOutputBytes) queued output bytes")
  }
}

/// On the loop: the socket's pipes that are up, oldest first.
public func pipes<H>(of socket: Socket<H>) -> [SocketPipe] { socket.core.pipes }

/// On the loop: closes `socket` at once and finishes it now (its pipes,
/// timers and mask fd released before this returns), whether or not it
/// was closed gracefully before (a graceful close would linger up to 5 s).
public func finishNow<H>(_ socket: Socket<H>) {
  socket.abort()
  socket.core.finish()
}

/// On the loop: true once the socket has finished (``finishNow(_:)``).
public func isFinished<H>(_ socket: Socket<H>) -> Bool { socket.core.isFinished }
