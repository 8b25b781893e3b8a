public import CoreMetrics
import Locking

/// Asks a ``Socket`` to export its ``SocketStatistics`` through
/// [swift-metrics](https://github.com/apple/swift-metrics), for
/// `Socket(_:loop:options:logger:metrics:)`. A socket made without it
/// exports nothing and makes no metric (docs/metrics.md).
///
/// The socket makes its metrics once, when it is created, from `factory`,
/// each labelled `label` plus a suffix (`userproto_socket_messages_sent`...)
/// and carrying `dimensions` plus `("socket", "<id>")`, the socket's
/// ``Socket/id``. They are destroyed (swift-metrics' `destroy()`: the
/// backend may release them) when the socket has finished closing.
public struct SocketMetrics: Sendable {
  /// The prefix of every metric's label.
  public var label: String
  /// Dimensions every metric of the socket carries, before `("socket", "<id>")`
  /// (so `socket` is taken: do not use it here).
  public var dimensions: [(String, String)]
  /// Where the metrics are made.
  public var factory: any MetricsFactory

  /// Export with metrics labelled `label`_..., carrying `dimensions`, made
  /// by `factory`: by default `MetricsSystem.factory` as it is where this
  /// value is created (the bootstrapped one, or one bound with
  /// `withMetricsFactory`).
  public init(
    label: String = "userproto_socket", dimensions: [(String, String)] = [],
    factory: any MetricsFactory = MetricsSystem.factory
  ) {
    self.label = label
    self.dimensions = dimensions
    self.factory = factory
  }
}

/// The queue sizes to write to a socket's meters, taken under the socket's
/// lock (``HandleState/queueSizesToExport()``) and written after it.
struct QueueSizes {
  /// Orders the writes: one older than the last written is dropped.
  var sequence: UInt64
  var sendBytes: Int
  var receiveBytes: Int
}

/// The swift-metrics objects of one socket, made once from its
/// ``SocketMetrics``. Every method is called after the socket's state lock
/// was released, never inside an `update` closure (docs/metrics.md).
///
/// `Counter` and `Meter` are `Sendable` in swift-metrics 2.13.0 (checked:
/// their fields are `let`), so this class is `Sendable` without
/// `@unchecked`.
final class SocketMeters: Sendable {
  let messagesSent: Counter
  let bytesSent: Counter
  let messagesReceived: Counter
  let bytesReceived: Counter
  let pipesAdded: Counter
  let pipesRemoved: Counter
  let pipeFailures: Counter
  let reconnects: Counter
  let acceptErrors: Counter
  /// Drops with `("cause", "stale")`: ``SocketStatistics/staleDrops``.
  let staleDrops: Counter
  /// Drops with `("cause", "datagram")`: ``SocketStatistics/datagramDrops``.
  let datagramDrops: Counter
  let pipes: Meter
  let sendQueueBytes: Meter
  let receiveQueueBytes: Meter
  /// The sequence of the last queue sizes written (see ``export(_:)``).
  private let writtenQueueSizes = Lock<UInt64>(0)

  init(_ configuration: SocketMetrics, socketID: UInt64) {
    let label = configuration.label
    let dimensions = configuration.dimensions + [("socket", "\(socketID)")]
    let factory = configuration.factory
    func makeCounter(_ name: String, _ extra: [(String, String)] = []) -> Counter {
      Counter(label: "\(label)_\(name)", dimensions: dimensions + extra, factory: factory)
    }
    func makeMeter(_ name: String) -> Meter {
      Meter(label: "\(label)_\(name)", dimensions: dimensions, factory: factory)
    }
    messagesSent = makeCounter("messages_sent")
    bytesSent = makeCounter("bytes_sent")
    messagesReceived = makeCounter("messages_received")
    bytesReceived = makeCounter("bytes_received")
    pipesAdded = makeCounter("pipes_added")
    pipesRemoved = makeCounter("pipes_removed")
    pipeFailures = makeCounter("pipe_failures")
    reconnects = makeCounter("reconnects")
    acceptErrors = makeCounter("accept_errors")
    staleDrops = makeCounter("drops", [("cause", "stale")])
    datagramDrops = makeCounter("drops", [("cause", "datagram")])
    pipes = makeMeter("pipes")
    sendQueueBytes = makeMeter("send_queue_bytes")
    receiveQueueBytes = makeMeter("receive_queue_bytes")
    // The meters start at zero, so they exist before their first change.
    for meter in [pipes, sendQueueBytes, receiveQueueBytes] { meter.set(Int(0)) }
  }

  /// The handler took `messages` sends of `bytes` bytes in all.
  func sent(messages: Int, bytes: Int) {
    messagesSent.increment(by: messages)
    bytesSent.increment(by: bytes)
  }

  /// `messages` deliveries of `bytes` bytes in all were queued for the
  /// application; `stale` were dropped instead.
  func received(messages: Int, bytes: Int, stale: Int) {
    if messages > 0 {
      messagesReceived.increment(by: messages)
      bytesReceived.increment(by: bytes)
    }
    if stale > 0 { staleDrops.increment(by: stale) }
  }

  /// A pipe came up; `count` are up now.
  func pipeAdded(count: Int) {
    pipesAdded.increment()
    pipes.set(count)
  }

  /// A pipe that was up went (`failed`: with an error); `count` are up now.
  func pipeRemoved(count: Int, failed: Bool) {
    pipesRemoved.increment()
    if failed { pipeFailures.increment() }
    pipes.set(count)
  }

  /// A UDP listener dropped a datagram.
  func datagramDropped() { datagramDrops.increment() }

  /// A dialer started an attempt after its first one.
  func redialed() { reconnects.increment() }

  /// A listener's accept failed (or its UDP socket stopped receiving).
  func acceptFailed() { acceptErrors.increment() }

  /// Writes queue sizes in the order the state had them: two threads that
  /// changed the state one after the other may get here in the other
  /// order, and a meter keeps the last value written, so an older one is
  /// dropped (as ``SocketCore`` does for the mask fd). The write happens
  /// under this small lock, which guards only the sequence number: no
  /// socket state is accessed, and the backend's handler takes no lock of
  /// ours. Counters need no such order: their increments commute.
  func export(_ sizes: QueueSizes) {
    writtenQueueSizes.withLock { written -> Void in
      guard sizes.sequence > written else { return }
      written = sizes.sequence
      sendQueueBytes.set(sizes.sendBytes)
      receiveQueueBytes.set(sizes.receiveBytes)
    }
  }

  /// The socket has finished: no pipe is up, and the backend may release
  /// every metric.
  func finished() {
    pipes.set(Int(0))
    destroy()
  }

  /// Tells the backend it may release every metric (swift-metrics'
  /// `destroy()`); they are not written to again.
  func destroy() {
    for counter in [
      messagesSent, bytesSent, messagesReceived, bytesReceived, pipesAdded, pipesRemoved, pipeFailures, reconnects,
      acceptErrors, staleDrops, datagramDrops,
    ] {
      counter.destroy()
    }
    for meter in [pipes, sendQueueBytes, receiveQueueBytes] { meter.destroy() }
  }
}
