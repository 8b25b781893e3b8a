import ExampleProtocols
import UserProto

/// A handler a fault role drives, with what it counts: the pipes ready for
/// messages, the messages it dropped by cause, and its other counters. Read
/// on the loop (``Socket/withHandlerAndWait(_:)``).
protocol FaultHandler: SocketHandler {
  /// Pipes that can carry messages now (for SP: their handshake is done).
  func faultReadyPipes(_ context: SocketContext) -> Int
  /// Messages this side dropped, by cause.
  var faultDrops: Counts { get }
  /// The handler's other counters.
  var faultCounters: Counts { get }
}

extension Push0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts { [("lost_with_pipes", statistics.lostWithPipes)] }
  var faultCounters: Counts {
    [("handler_sent", statistics.sent), ("held_back", statistics.heldBack), ("ignored", statistics.ignoredMessages)]
  }
}

extension Pub0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts { [("not_writable", statistics.drops), ("lost_with_pipes", statistics.lostWithPipes)] }
  var faultCounters: Counts { [("published", statistics.published), ("copies_written", statistics.delivered)] }
}

extension Pair0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { peer == nil ? 0 : 1 }
  var faultDrops: Counts { [("lost_with_pipes", statistics.lostWithPipes)] }
  var faultCounters: Counts {
    [
      ("handler_sent", statistics.sent), ("handler_received", statistics.received),
      ("held_back", statistics.heldBack), ("refused_pipes", statistics.refusedPipes),
    ]
  }
}

extension Req0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts { [("ignored_replies", statistics.ignoredReplies)] }
  var faultCounters: Counts {
    [
      ("requests_sent", statistics.requestsSent), ("timed_resends", statistics.timedResends),
      ("pipe_loss_resends", statistics.pipeLossResends), ("replies_delivered", statistics.repliesDelivered),
      ("abandoned", statistics.abandonedRequests),
    ]
  }
}

extension Pull0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts { [] }
  var faultCounters: Counts { [("handler_received", statistics.received)] }
}

extension Sub0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts { [("filtered", statistics.filtered)] }
  var faultCounters: Counts { [("handler_delivered", statistics.delivered)] }
}

extension Rep0Handler: FaultHandler {
  func faultReadyPipes(_ context: SocketContext) -> Int { pipes.ready.count }
  var faultDrops: Counts {
    [
      ("requests_over_ttl", statistics.requestsOverTTL), ("requests_over_limit", statistics.requestsOverLimit),
      ("replies_without_request", statistics.repliesWithoutRequest),
      ("replies_to_vanished", statistics.repliesToVanishedPeers),
      ("replies_to_stalled", statistics.repliesToStalledPeers), ("lost_with_pipes", statistics.lostWithPipes),
    ]
  }
  var faultCounters: Counts {
    [("requests_delivered", statistics.requestsDelivered), ("replies_sent", statistics.repliesSent)]
  }
}

/// UDP as is: each message one datagram to the first writable pipe (the
/// protocol's defaults), each datagram received one message. Counts what
/// its pipes held unsent when they went (a send refused with ECONNREFUSED
/// after an ICMP port unreachable fails the pipe).
final class DatagramHandler: FaultHandler {
  private(set) var lostWithPipes = 0

  func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    lostWithPipes += pipe.queuedOutputMessages
  }

  func faultReadyPipes(_ context: SocketContext) -> Int { context.pipes.count }
  var faultDrops: Counts { [("lost_with_pipes", lostWithPipes)] }
  var faultCounters: Counts { [] }
}
