/// Counters of a ``Socket``, readable from any thread.
public struct SocketStatistics: Sendable, Hashable {
  /// Messages the handler delivered to the application.
  public var messagesReceived = 0
  /// The bytes of those messages.
  public var bytesReceived = 0
  /// Messages the application sent that the handler took.
  public var messagesSent = 0
  /// The bytes of those messages.
  public var bytesSent = 0
  /// Pipes up now.
  public var pipes = 0
  /// Pipes added so far.
  public var pipesAdded = 0
  /// Pipes removed so far, for whatever reason.
  public var pipesRemoved = 0
  /// Pipes removed because they failed (a protocol violation, a reset...).
  public var pipeFailures = 0
  /// Dial attempts after the first one of each dialer (re-dials after a
  /// failed attempt or a lost connection).
  public var reconnects = 0
  /// Accept failures (EMFILE and the like); accepting pauses 100 ms each.
  public var acceptErrors = 0
  /// Messages dropped because a send abandoned them
  /// (``SocketHandler/sendCancelsReceive``): queued ones discarded by a
  /// send, and ones the handler delivered before it saw that send.
  public var staleDrops = 0
  /// Datagrams the socket's UDP listeners dropped: from peers whose pipe
  /// had paused reading (the receive queue at its high watermark), and ones
  /// arriving while a listener could not take a new peer (the socket
  /// closing). What the kernel or the network dropped is not seen here.
  public var datagramDrops = 0

  /// All counters zero.
  public init() {}
}
