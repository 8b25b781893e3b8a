/// TCP keep-alive for a socket's TCP connections (``SocketOptions/tcpKeepAlive``):
/// how a peer that vanished without a FIN or an RST (its host lost power,
/// its network dropped everything: a half-open connection) is noticed.
///
/// Without it, nothing notices: a connection that only receives waits
/// forever, and one with unacknowledged data gives up only after the
/// kernel's retransmissions (`net.ipv4.tcp_retries2`, 15 by default: about
/// 15 minutes). With it, the kernel sends a probe once the connection has
/// been silent for ``idle``, then every ``interval``, and fails the
/// connection after ``probes`` unanswered ones; and the same total,
/// ``detectionTime``, is set as `TCP_USER_TIMEOUT`, so a connection whose
/// data goes unacknowledged that long fails too (a keep-alive alone never
/// fires while data is outstanding). Either way the pipe fails with
/// `ETIMEDOUT` within ``detectionTime`` of the peer's last sign of life,
/// and a dialed pipe is re-dialed.
///
/// The kernel takes the three values in whole seconds (`TCP_KEEPIDLE`,
/// `TCP_KEEPINTVL`: 1 to 32,767; `TCP_KEEPCNT`: 1 to 127): each is rounded
/// up and clamped to that range, and ``detectionTime`` is computed from the
/// values applied.
public struct TCPKeepAlive: Sendable, Hashable {
  /// Silence before the first probe (`TCP_KEEPIDLE`).
  public var idle: Duration
  /// Time between probes (`TCP_KEEPINTVL`).
  public var interval: Duration
  /// Unanswered probes before the connection fails (`TCP_KEEPCNT`).
  public var probes: Int

  /// Keep-alive after `idle` of silence, a probe every `interval`, failing after `probes` unanswered ones.
  public init(idle: Duration = .seconds(10), interval: Duration = .seconds(2), probes: Int = 3) {
    self.idle = idle
    self.interval = interval
    self.probes = probes
  }

  /// ``idle`` in the kernel's whole seconds.
  var idleSeconds: Int32 { Self.wholeSeconds(idle) }
  /// ``interval`` in the kernel's whole seconds.
  var intervalSeconds: Int32 { Self.wholeSeconds(interval) }
  /// ``probes`` as the kernel takes it.
  var probeCount: Int32 { Int32(min(max(probes, 1), 127)) }

  /// The longest a vanished peer goes unnoticed: idle + interval × probes,
  /// as applied (in whole seconds). Also the connections' `TCP_USER_TIMEOUT`.
  public var detectionTime: Duration {
    .seconds(Int(idleSeconds) + Int(intervalSeconds) * Int(probeCount))
  }

  private static func wholeSeconds(_ duration: Duration) -> Int32 {
    let parts = duration.components
    let seconds = parts.seconds + (parts.attoseconds > 0 ? 1 : 0)
    return Int32(min(max(seconds, 1), 32_767))
  }
}
