import Glibc

/// Two transports connected in memory on one loop: what one writes, the
/// other receives (in order), with the same flow control as a kernel
/// transport: a paused reader holds data back at the writer.
final class MemoryTransport: Transport, @unchecked Sendable {
  let loop: EventLoop
  let isDatagram = false
  private weak var delegate: (any TransportDelegate)?
  private weak var peer: MemoryTransport?
  private var inbox = FIFO<[UInt8]>()
  private var inboxBytes = 0
  /// Written but held back while the peer's inbox is full (flow control).
  private var outbound = FIFO<[UInt8]>()
  /// The inbox holds at most this much; beyond it writers wait, as with a
  /// kernel socket buffer.
  static let inboxLimit = 64 * 1024
  private var paused = false
  private var finished = false
  private var peerEnded = false
  private var writeShut = false
  private var endSent = false
  /// The peer reset the connection: an error after the data already here.
  private var peerReset = false

  private init(loop: EventLoop) { self.loop = loop }

  static func pair(loop: EventLoop) -> (MemoryTransport, MemoryTransport) {
    let a = MemoryTransport(loop: loop)
    let b = MemoryTransport(loop: loop)
    a.peer = b
    b.peer = a
    return (a, b)
  }

  func start(_ delegate: any TransportDelegate) {
    self.delegate = delegate
    delegate.transportConnected(local: nil, remote: nil)
    drain()
  }

  func write(_ bytes: [UInt8]) {
    // A stream: zero bytes are nothing on the wire.
    guard !finished, !writeShut, !bytes.isEmpty else { return }
    outbound.append(bytes)
    try? loop.execute { [weak self] in self?.transfer() }
  }

  /// Moves held-back output into the peer's inbox while it has room, and
  /// reports what moved as written.
  private func transfer() {
    guard !finished else { return }
    guard let peer, !peer.finished else {
      if !outbound.isEmpty {
        outbound.removeAll()
        delegate?.transportFailed(IOError("send", EPIPE))
      }
      return
    }
    var moved = 0
    var chunks = 0
    while peer.inboxBytes < MemoryTransport.inboxLimit, let chunk = outbound.popFirst() {
      peer.inbox.append(chunk)
      peer.inboxBytes += chunk.count
      moved += chunk.count
      chunks += 1
    }
    var ended = false
    if writeShut && outbound.isEmpty && !endSent {
      // End-of-stream follows the last byte, as after shutdown(SHUT_WR).
      endSent = true
      ended = true
      peer.peerEnded = true
    }
    if chunks > 0 { delegate?.transportWrote(moved, messages: chunks) }
    if ended { delegate?.transportFinishedWriting() }
    if moved > 0 || endSent { try? loop.execute { [weak peer] in peer?.drain() } }
  }

  private func drain() {
    guard !finished, delegate != nil else { return }
    var took = false
    while !paused && !finished, let chunk = inbox.popFirst() {
      inboxBytes -= chunk.count
      took = true
      delegate?.transportReceived(chunk)
    }
    if took, let peer { try? loop.execute { [weak peer] in peer?.transfer() } }
    if inbox.isEmpty && peerReset && !paused && !finished {
      // As TCP: what arrived before the reset is read, then ECONNRESET.
      let delegate = self.delegate
      close()
      delegate?.transportFailed(IOError("recv", ECONNRESET))
      return
    }
    if inbox.isEmpty && peerEnded && !paused && !finished {
      peerEnded = false
      delegate?.transportReachedEnd()
    }
  }

  func pauseReading() { paused = true }

  func resumeReading() {
    paused = false
    try? loop.execute { [weak self] in self?.drain() }
  }

  func shutdownWrite() {
    guard !writeShut else { return }
    writeShut = true
    try? loop.execute { [weak self] in self?.transfer() }
  }

  func reset() {
    guard !finished else { return }
    finished = true
    outbound.removeAll()
    let peer = self.peer
    try? loop.execute {
      guard let peer, !peer.finished else { return }
      peer.peerReset = true
      peer.drain()
    }
  }

  func close() {
    guard !finished else { return }
    finished = true
    let peer = self.peer
    try? loop.execute {
      guard let peer, !peer.finished else { return }
      if !peer.writeShut || !peer.peerEnded {
        peer.peerEnded = true
        peer.drain()
      }
    }
  }
}
