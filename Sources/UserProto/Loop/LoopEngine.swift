import Glibc

/// What a loop engine can be asked to do. Every operation is identified by
/// a token; its results arrive as completions carrying that token.
enum LoopOperation {
  /// Report readiness changes of `fd` (io_uring multishot POLL_ADD; epoll
  /// edge-triggered), until cancelled.
  case poll(fd: Int32, events: UInt32)
  /// Accept connections on a listening socket, until cancelled or an error.
  case accept(fd: Int32)
  /// Connect a non-blocking socket.
  case connect(fd: Int32, address: SocketAddress)
  /// Receive a stream of chunks (or of whole datagrams), until
  /// end-of-stream, an error or cancel.
  case receive(fd: Int32, datagram: Bool)
  /// Send bytes once; the completion says how many were sent.
  case send(fd: Int32, bytes: [UInt8])
  /// Receive datagrams with their senders' addresses from an unconnected
  /// datagram socket, until an error or cancel.
  case receiveFrom(fd: Int32)
  /// Send one datagram to `address`.
  case sendTo(fd: Int32, bytes: [UInt8], address: SocketAddress)
}

/// One result of an operation.
enum CompletionValue {
  case events(UInt32)
  case accepted(Int32)
  case connected
  /// Received bytes; empty means end-of-stream.
  case received([UInt8])
  case sent(Int)
  /// One datagram and its sender.
  case receivedFrom([UInt8], SocketAddress)
  /// A datagram longer than the receive buffer (its length as the kernel
  /// reported it): dropped and counted, not delivered cut short. The
  /// receive goes on.
  case truncated(Int)
  case failed(IOError)
}

struct LoopCompletion {
  var token: UInt64
  var value: CompletionValue
  /// No further completion will carry this token.
  var isFinal: Bool
}

/// A readiness and I/O engine: io_uring, or epoll emulating the same
/// completion semantics. Confined to the loop's thread except `wakeup()`.
protocol LoopEngine: AnyObject {
  var kind: EventLoop.Backend { get }
  /// Capabilities found at start-up, for diagnostics, and features given up
  /// later. Safe from any thread.
  var capabilities: [String] { get }
  /// Loop-confined counts of queue pressure the engine absorbed (for tests
  /// and diagnostics); zeros for an engine without such queues.
  var pressure: EnginePressure { get }
  /// Called once on the loop's thread before the first wait.
  func start() throws(IOError)
  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError)
  /// Cancels an operation; its final completion (ECANCELED) follows.
  func cancel(token: UInt64)
  /// Waits for completions up to `timeout` nanoseconds (nil: no limit),
  /// a wake-up, or at least one completion, and delivers them.
  func wait(timeout: Int64?, deliver: (LoopCompletion) -> Void) throws(IOError)
  /// Interrupts `wait` from any thread; does nothing once closed.
  func wakeup()
  /// Blocks up to `milliseconds` or until a wake-up (used to back off while
  /// the engine keeps failing).
  func pause(milliseconds: Int32)
  func close()
}

/// Queue pressure an engine absorbed without losing an operation.
struct EnginePressure: Equatable {
  /// Times the submission queue was full and was flushed to make room.
  var submissionQueueFull = 0
  /// Times io_uring_enter reported a full completion queue (EBUSY/EAGAIN)
  /// and the loop reaped before submitting again.
  var completionQueueBusy = 0
  /// Multishot operations the kernel ended early (CQ overflow) that the
  /// loop armed again.
  var multishotEnded = 0
  /// Submissions outside a wait (a cancel, room in a full submission queue)
  /// that io_uring_submit refused, or that a full completion queue kept
  /// back after a few reaps: their SQEs go with the next io_uring_enter.
  var submitFailures = 0
}
