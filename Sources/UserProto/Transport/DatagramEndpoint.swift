import Glibc
import Synchronization

/// One unconnected UDP socket shared by every peer of a datagram listener:
/// datagrams are received with their senders' addresses and handed to that
/// peer's transport, and each peer's datagrams are sent to its address, one
/// send in flight at a time so every peer's datagrams leave in order.
/// Loop-confined, except the counters.
final class DatagramEndpoint: @unchecked Sendable {
  let loop: EventLoop
  let fd: Int32
  let localAddress: SocketAddress
  let maximumDatagramSize: Int
  /// Makes the transport for a datagram from an unknown address, or nil to
  /// drop it (the listener is closed or its queue is full).
  private let newPeer: (SocketAddress) -> PeerDatagramTransport?
  /// Called once if receiving fails for good (every peer failed with it).
  private let failed: (IOError) -> Void
  /// Called on the loop for each datagram dropped (after it is counted in
  /// ``droppedDatagrams``): a socket adds it to its statistics.
  private let dropped: () -> Void

  private var peers: [SocketAddress: PeerDatagramTransport] = [:]
  private var receiveHandle: IOHandle?
  private var outbound = FIFO<(peer: PeerDatagramTransport, bytes: [UInt8])>()
  private var sending = false
  /// The listener is closed: no new peers; the fd closes with the last one.
  private var listenerClosed = false
  private var fdClosed = false
  private let drops = Atomic<Int>(0)

  init(
    loop: EventLoop, fd: Int32, localAddress: SocketAddress,
    newPeer: @escaping (SocketAddress) -> PeerDatagramTransport?, failed: @escaping (IOError) -> Void,
    dropped: @escaping () -> Void = {}
  ) {
    self.loop = loop
    self.fd = fd
    self.localAddress = localAddress
    self.newPeer = newPeer
    self.failed = failed
    self.dropped = dropped
    maximumDatagramSize = Sockets.maximumDatagramSize(fd, family: localAddress.family)
  }

  /// Datagrams dropped: from new peers while the listener could not take
  /// them, for peers whose socket had paused reading (its receive queue was
  /// full) or was gone, and arriving after the listener closed. Any thread.
  var droppedDatagrams: Int { drops.load(ordering: .relaxed) }

  /// Counts one dropped datagram. On the loop.
  func countDrop() {
    drops.add(1, ordering: .relaxed)
    dropped()
  }

  /// Peers with a live transport (tests).
  var peerCount: Int { peers.count }

  func start() {
    guard receiveHandle == nil, !fdClosed else { return }
    do {
      receiveHandle = try loop.receiveDatagrams(socket: fd) { [weak self] result in
        guard let self, !self.fdClosed else { return }
        switch result {
        case .success(let (bytes, sender)):
          self.received(bytes, from: sender)
        case .failure(let error):
          self.receiveHandle = nil
          self.fail(error)
        }
      }
    } catch {
      fail(error as? IOError ?? IOError("recvmsg", EIO))
    }
  }

  private func received(_ bytes: [UInt8], from sender: SocketAddress) {
    if let peer = peers[sender] {
      peer.deliver(bytes)
    } else if !listenerClosed, let peer = newPeer(sender) {
      peers[sender] = peer
      peer.deliver(bytes)
    } else {
      countDrop()
    }
  }

  /// Receiving ended (an error, or the loop shutting down): every peer
  /// fails with it, and the fd is closed.
  private func fail(_ error: IOError) {
    guard !fdClosed else { return }
    let all = Array(peers.values)
    peers = [:]
    for peer in all { peer.endpointFailed(error) }
    closeFD()
    if !error.isCancellation || !listenerClosed { failed(error) }
  }

  func send(_ bytes: [UInt8], for peer: PeerDatagramTransport) {
    outbound.append((peer, bytes))
    pump()
  }

  private func pump() {
    guard !sending, !fdClosed else { return }
    while let next = outbound.popFirst() {
      guard peers[next.peer.address] === next.peer else { continue }  // closed since
      sending = true
      do {
        _ = try loop.send(socket: fd, next.bytes, to: next.peer.address) { [weak self] result in
          guard let self else { return }
          self.sending = false
          next.peer.sent(next.bytes.count, result)
          self.pump()
        }
      } catch {
        sending = false
        next.peer.sent(next.bytes.count, .failure(error as? IOError ?? IOError("sendmsg", EIO)))
        continue
      }
      return
    }
  }

  /// A peer's transport closed: its address may start a new peer later.
  func remove(_ peer: PeerDatagramTransport) {
    if peers[peer.address] === peer { peers[peer.address] = nil }
    if listenerClosed && peers.isEmpty { closeFD() }
  }

  /// The listener closed: no new peers; the socket stays open for the
  /// peers already made (as accepted TCP connections outlive their
  /// listener) and closes with the last of them.
  func closeListener() {
    listenerClosed = true
    if peers.isEmpty { closeFD() }
  }

  private func closeFD() {
    guard !fdClosed else { return }
    fdClosed = true
    if let handle = receiveHandle { loop.cancel(handle) }
    receiveHandle = nil
    outbound.removeAll()
    Sys.close(fd)
  }
}

/// The transport of one peer of a ``DatagramEndpoint``: its socket's
/// datagrams go to the peer's address over the shared UDP socket.
final class PeerDatagramTransport: Transport, @unchecked Sendable {
  let loop: EventLoop
  let isDatagram = true
  let address: SocketAddress
  private let endpoint: DatagramEndpoint
  private weak var delegate: (any TransportDelegate)?
  private var paused = false
  private var closed = false
  private var queued = 0
  private var shutdownRequested = false

  init(endpoint: DatagramEndpoint, address: SocketAddress) {
    self.endpoint = endpoint
    self.address = address
    loop = endpoint.loop
  }

  func start(_ delegate: any TransportDelegate) {
    self.delegate = delegate
    delegate.transportConnected(local: endpoint.localAddress, remote: address)
  }

  /// A datagram from the peer; dropped (and counted) while reading is
  /// paused, or when its socket is gone (a `configure` that kept no
  /// reference to it).
  func deliver(_ bytes: [UInt8]) {
    guard !closed else { return }
    if !paused, let delegate {
      delegate.transportReceived(bytes)
    } else {
      endpoint.countDrop()
    }
  }

  func write(_ bytes: [UInt8]) {
    guard !closed else { return }
    queued += 1
    endpoint.send(bytes, for: self)
  }

  /// One of this peer's datagrams was sent (or failed: that fails this peer
  /// only, as an unreachable network or a refused size concerns it alone).
  func sent(_ count: Int, _ result: Result<Int, IOError>) {
    guard !closed else { return }
    queued -= 1
    switch result {
    case .success(let n):
      delegate?.transportWrote(n, messages: 1)
      finishWritingIfDone()
    case .failure(let error):
      closed = true
      endpoint.remove(self)
      delegate?.transportFailed(error)
    }
  }

  func endpointFailed(_ error: IOError) {
    guard !closed else { return }
    closed = true
    delegate?.transportFailed(error)
  }

  func pauseReading() { paused = true }
  func resumeReading() { paused = false }

  func shutdownWrite() {
    shutdownRequested = true
    finishWritingIfDone()
  }

  private func finishWritingIfDone() {
    guard shutdownRequested, queued == 0 else { return }
    shutdownRequested = false
    delegate?.transportFinishedWriting()
  }

  func close() {
    guard !closed else { return }
    closed = true
    endpoint.remove(self)
  }

  /// UDP has no reset: the same as ``close()``.
  func reset() { close() }
}
