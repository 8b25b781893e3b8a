import UserProto

/// The one peer of a PAIR socket, v0 and v1 alike: the first pipe to
/// complete its handshake is paired and a newer one is refused while it
/// lasts; a send goes to the peer when its pipe can take it and waits in
/// the socket's send queue otherwise. Keeps the counters both versions
/// report. Loop-confined, owned by its handler.
struct SPPairSlot {
  /// The pipe this socket is paired with, once its handshake completed.
  private(set) var peer: SocketPipe?
  /// True while the first queued message waits for the peer (so it is
  /// counted in `heldBack` once).
  private var holding = false
  /// Messages written to the peer.
  private(set) var sent = 0
  /// Messages that waited because no peer could take them when first offered.
  private(set) var heldBack = 0
  /// Pipes refused because a peer was already paired.
  private(set) var refusedPipes = 0
  /// Peers paired so far.
  private(set) var peersPaired = 0
  /// Messages a gone pipe took along unsent (see `SPPipes.removed(_:error:)`).
  private(set) var lostWithPipes = 0

  /// `pipe` completed its handshake: it becomes the peer (and waiting sends
  /// are offered again), or, when there is one already, the reason it is
  /// refused. `name` is the protocol's, for that reason.
  mutating func pair(with pipe: SocketPipe, name: String, context: SocketContext) -> SocketError? {
    if let current = peer, current !== pipe {
      refusedPipes += 1
      return .notSupported(
        "\(name) takes one peer at a time and is paired with \(current); the newer pipe is refused (NNG: NNG_EBUSY)")
    }
    peer = pipe
    peersPaired += 1
    try? context.resumeSends()  // sends waiting for a peer can go now
    return nil
  }

  /// A pipe went: what it took along unsent is counted lost, and when it was
  /// the peer the place is free for the next pipe to complete its handshake.
  mutating func removed(_ pipe: SocketPipe, error: SocketError?, pipes: SPPipes) {
    lostWithPipes += pipes.removed(pipe, error: error)
    if peer === pipe { peer = nil }
  }

  /// Writes `frame(peer)` to the peer if its pipe is writable; waits
  /// otherwise (no peer yet, or its output full).
  mutating func send(_ frame: (SocketPipe) -> [UInt8]) -> SendDisposition {
    if let pipe = peer, pipe.isWritable {
      do throws(SocketError) {
        try pipe.write(frame(pipe))
        holding = false
        sent += 1
        return .taken
      } catch {
        // The pipe is going: its removal frees the place, and the next
        // peer's handshake offers the message again.
      }
    }
    if !holding {
      holding = true
      heldBack += 1
    }
    return .wait
  }
}
