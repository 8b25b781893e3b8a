/// Buffer limits of a protocol socket. Memory stays bounded whatever the
/// peer does: reading from the transport pauses while the receive queue is
/// at its high watermark, and sends would block at the transmit high
/// watermark.
public struct SocketOptions: Sendable, Hashable {
  /// Receive queue bytes (each message's size plus ``perMessageCost``) at
  /// which reading from the transport pauses.
  public var receiveHighWatermark: Int
  /// Receive queue bytes at which reading resumes.
  public var receiveLowWatermark: Int
  /// Transmit queue bytes (each message's size plus ``perMessageCost``)
  /// at which sends would block (not writable).
  public var sendHighWatermark: Int
  /// Transmit queue bytes at which the socket is writable again.
  public var sendLowWatermark: Int
  /// The largest message accepted in either direction (default 1 MiB).
  public var maximumMessageSize: Int
  /// TCP keep-alive and user timeout for the socket's TCP connections,
  /// dialed and accepted (see ``TCPKeepAlive``); nil (the default) leaves
  /// the kernel's defaults: no keep-alive, so a half-open connection is
  /// never noticed by a peer that only receives.
  public var tcpKeepAlive: TCPKeepAlive?
  /// How long a graceful close waits for queued output to reach the
  /// kernel and for the peers to finish before it ends every pipe at once
  /// (default 5 s; `.zero` ends them at the next loop turn). Used by
  /// ``Socket/close()``; the first design's sockets ignore it.
  public var closeLinger: Duration

  /// What each queued message counts against the watermarks on top of its
  /// bytes (the bookkeeping a queue entry costs), in both directions, so a
  /// peer or an application cannot grow a queue without bound with
  /// zero-length messages.
  public static let perMessageCost = 64

  /// Options with these limits (by default 256 KiB and 64 KiB watermarks, 1 MiB messages); a low
  /// watermark above its high one is lowered to it.
  public init(
    receiveHighWatermark: Int = 256 * 1024, receiveLowWatermark: Int = 64 * 1024,
    sendHighWatermark: Int = 256 * 1024, sendLowWatermark: Int = 64 * 1024,
    maximumMessageSize: Int = 1 << 20, closeLinger: Duration = .seconds(5), tcpKeepAlive: TCPKeepAlive? = nil
  ) {
    self.receiveHighWatermark = receiveHighWatermark
    self.receiveLowWatermark = min(receiveLowWatermark, receiveHighWatermark)
    self.sendHighWatermark = sendHighWatermark
    self.sendLowWatermark = min(sendLowWatermark, sendHighWatermark)
    self.maximumMessageSize = maximumMessageSize
    self.tcpKeepAlive = tcpKeepAlive
    self.closeLinger = max(closeLinger, .zero)
  }
}

/// The state of a protocol socket's connection.
public enum ConnectionState: Sendable, Hashable {
  /// Connecting; sends are queued.
  case connecting
  /// Connected in both directions.
  case connected
  /// The peer finished sending (end-of-stream); this side may still send.
  case peerFinishedSending
  /// This side shut down its write side; the peer may still send.
  case writeShutdown
  /// Both directions are closed, or the peer is gone.
  case closed
  /// The connection failed with an error.
  case failed(SocketError)
}
