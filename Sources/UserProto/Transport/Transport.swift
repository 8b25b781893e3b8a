/// What a transport reports to the socket above it. Called on the loop.
protocol TransportDelegate: AnyObject {
  /// The connection is established (immediately for accepted ones), between
  /// these addresses (nil where the transport has none: in memory).
  func transportConnected(local: SocketAddress?, remote: SocketAddress?)
  /// Bytes (stream) or one datagram arrived.
  func transportReceived(_ bytes: [UInt8])
  /// The peer finished sending (stream end-of-stream).
  func transportReachedEnd()
  /// End-of-stream was sent after all queued output (the write side is
  /// shut down).
  func transportFinishedWriting()
  /// `count` bytes of queued output reached the kernel (or the peer), and
  /// with them the last bytes of `messages` queued writes.
  func transportWrote(_ count: Int, messages: Int)
  /// The connection failed; no further callbacks follow.
  func transportFailed(_ error: IOError)
}

/// A byte-stream or datagram pipe driven by an event loop. Every method is
/// called on the loop's thread.
protocol Transport: AnyObject, Sendable {
  var loop: EventLoop { get }
  /// True for datagram transports: each receive is one message.
  var isDatagram: Bool { get }
  func start(_ delegate: any TransportDelegate)
  /// Queues bytes (stream) or one datagram for sending, in order.
  func write(_ bytes: [UInt8])
  /// Stops delivering received data until `resumeReading`.
  func pauseReading()
  func resumeReading()
  /// Sends end-of-stream after the queued output (stream shutdown(SHUT_WR)).
  func shutdownWrite()
  /// Ends everything now and releases the fd; no callbacks follow.
  func close()
  /// Like ``close()``, but the peer sees an error (a TCP RST), not a clean
  /// end of stream.
  func reset()
}
