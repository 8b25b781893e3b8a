import Glibc
import Logging

/// How a dialer re-dials: NNG's reconnect-min and reconnect-max.
public struct ReconnectPolicy: Sendable, Hashable {
  /// The wait before the first re-dial after a failure or a lost pipe
  /// (NNG_OPT_RECONNMINT; NNG's default, 100 ms).
  public var minimum: Duration
  /// The wait doubles after each failed attempt up to this; zero means it
  /// stays at ``minimum`` (NNG_OPT_RECONNMAXT; NNG's default, 0).
  public var maximum: Duration
  /// Each wait is drawn uniformly from [wait × (1 - jitter), wait], so
  /// peers that lost the same server do not re-dial in step. 0 to 1;
  /// default 0.25.
  public var jitter: Double

  /// A policy from its waits and jitter: negative durations count as zero, and the jitter is clamped to 0...1.
  public init(minimum: Duration = .milliseconds(100), maximum: Duration = .zero, jitter: Double = 0.25) {
    self.minimum = max(minimum, .zero)
    self.maximum = max(maximum, .zero)
    self.jitter = min(max(jitter, 0), 1)
  }

  /// The longest any wait can be.
  public var ceiling: Duration { maximum > minimum ? maximum : minimum }

  /// The wait after `wait`, doubled up to the ceiling.
  func next(after wait: Duration) -> Duration {
    guard maximum > minimum else { return minimum }
    return wait >= maximum / 2 ? maximum : wait * 2
  }

  func jittered(_ wait: Duration) -> Duration {
    guard jitter > 0 else { return wait }
    return wait * (1 - Double.random(in: 0...jitter))
  }
}

/// Dials one address for a socket and re-dials it, with the back-off of
/// its ``ReconnectPolicy``, after a failed attempt or a lost pipe, until the
/// socket closes. Loop-confined.
final class Dialer {
  let url: TransportURL
  let policy: ReconnectPolicy
  private weak var core: SocketCore?
  private var wait: Duration
  private var pipe: SocketPipe?
  private var timer: EventLoop.Scheduled?
  private var stopped = false
  private var attempts = 0
  /// Attempts in a row that could not even start (no transport made).
  private var startFailures = 0

  init(url: TransportURL, policy: ReconnectPolicy, core: SocketCore) {
    self.url = url
    self.policy = policy
    self.core = core
    wait = policy.minimum
  }

  func start() { dial() }

  private func dial() {
    timer = nil
    guard !stopped, let core else { return }
    attempts += 1
    if attempts > 1 {
      core.update { $0.statistics.reconnects += 1 }
      if let meters = core.meters { meters.redialed() }
    }
    let transport: any Transport
    do throws(SocketError) {
      transport = try makeTransport(core)
    } catch {
      // EMFILE, no in-process listener yet: try again later.
      startFailures += 1
      logStartFailure(error, core.logger)
      scheduleRedial()
      return
    }
    startFailures = 0
    pipe = core.attach(transport, dialer: self, url: url)
  }

  /// The first attempt of a run that cannot start is a notice; the same
  /// failure again at each re-dial (an in-process name nobody listens on
  /// yet, tried every 100 ms) is debug, so it cannot flood the log.
  private func logStartFailure(_ error: SocketError, _ logger: Logger) {
    let failures = startFailures
    logger.log(
      level: failures == 1 ? .notice : .debug, "dial failed to start",
      metadata: ["pipe.url": "\(url)", "error": "\(error)", "dial.failures_in_a_row": "\(failures)"])
  }

  private func makeTransport(_ core: SocketCore) throws(SocketError) -> any Transport {
    do throws(IOError) {
      switch url {
      case .tcp(let address), .ipc(let address):
        let fd = try Sockets.stream(family: address.family)
        if address.isIP {
          do throws(IOError) {
            try Sockets.configureTCP(fd, core.options)
          } catch {
            Sys.close(fd)
            throw error
          }
        }
        return StreamTransport(loop: core.loop, fd: fd, connectTo: address)
      case .udp(let address):
        let any = try SocketAddress(ip: address.family == AF_INET6 ? "::" : "0.0.0.0", port: 0)
        let fd = try Sockets.udp(local: any, remote: address)
        return StreamTransport(loop: core.loop, fd: fd, datagram: true)
      case .inproc(let name):
        return try Inproc.connect(name, from: core)
      }
    } catch {
      throw .transport(error)
    }
  }

  /// The pipe connected: the back-off starts over.
  func connected() { wait = policy.minimum }

  /// The pipe (or the attempt) is gone: re-dial after the back-off.
  func pipeGone(wasUp: Bool) {
    pipe = nil
    scheduleRedial()
  }

  private func scheduleRedial() {
    guard !stopped, let core else { return }
    let delay = policy.jittered(wait)
    wait = policy.next(after: wait)
    let weak = WeakLoopConfined(self)
    timer = try? core.loop.schedule(after: delay) { weak.value?.dial() }
    guard timer != nil else { return }  // the loop is shutting down: no re-dial
    let next = attempts + 1
    core.logger.debug(
      "re-dial scheduled",
      metadata: ["pipe.url": "\(url)", "redial.delay_ms": "\(delay.inMilliseconds)", "dial.attempt": "\(next)"])
  }

  func stop() {
    stopped = true
    timer?.cancel()
    timer = nil
    // The pipe holds its dialer (`SocketPipe.dialer`): an abort ends the
    // pipe without `pipeGone`, so the reference is dropped here, or the two
    // would keep each other alive (found by the soak: 2 objects, about 300
    // bytes, per aborted socket).
    pipe = nil
  }
}
