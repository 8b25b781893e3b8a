import Glibc
import Logging

/// Accepts pipes for a socket on one address: a TCP or Unix-domain
/// listening socket (a pipe per connection), a UDP socket (a pipe per peer
/// address), or an in-process name. Loop-confined once started.
final class PipeListener {
  let url: TransportURL
  private weak var core: SocketCore?
  private let loop: EventLoop
  private var fd: Int32 = -1
  private var endpoint: DatagramEndpoint?
  private var acceptHandle: IOHandle?
  private var retry: EventLoop.Scheduled?
  private var closed = false
  /// Accepts in a row that failed (reset by one that succeeds).
  private var acceptFailures = 0

  /// The wait before accepting again after a failed accept.
  static let acceptRetryDelay: Duration = .milliseconds(100)

  /// Binds (on the calling thread, so that errors and the chosen port come
  /// back at once); ``start()`` then accepts on the loop. The calls made
  /// here see the loop's fault table (tests), as the loop's own do.
  init(url: TransportURL, core: SocketCore) throws(SocketError) {
    self.core = core
    loop = core.loop
    let opened: (fd: Int32, url: TransportURL)
    do throws(IOError) {
      opened = try LoopFaults.binding(core.loop.faults) { () throws(IOError) -> (fd: Int32, url: TransportURL) in
        switch url {
        case .tcp(let address), .ipc(let address):
          let (fd, bound) = try Sockets.listen(on: address)
          return (fd, address.isIP ? .tcp(bound) : .ipc(bound))
        case .udp(let address):
          let (fd, bound) = try Sockets.udpBound(on: address)
          return (fd, .udp(bound))
        case .inproc:
          return (-1, url)
        }
      }
    } catch {
      throw .transport(error)
    }
    fd = opened.fd
    self.url = opened.url
    if case .inproc(let name) = url {
      try Inproc.register(name, self, loop: loop)
    }
  }

  /// Starts accepting. On the loop.
  func start() {
    guard !closed else { return }
    switch url {
    case .tcp, .ipc: accept()
    case .udp(let address):
      let weak = WeakLoopConfined(self)
      let endpoint = DatagramEndpoint(
        loop: loop, fd: fd, localAddress: address,
        newPeer: { peer in weak.value?.adoptPeer(peer) },
        failed: { error in weak.value?.receiveFailed(error) },
        dropped: { weak.value?.countDatagramDrop() })
      self.endpoint = endpoint
      endpoint.start()
    case .inproc: break
    }
  }

  private func accept() {
    guard !closed, acceptHandle == nil else { return }
    acceptHandle = try? loop.accept(listener: fd) { [weak self] result in
      guard let self else { return }
      switch result {
      case .success(let client):
        self.acceptFailures = 0
        self.adopt(client)
      case .failure(let error):
        self.acceptHandle = nil
        guard !error.isCancellation, !self.closed else { return }
        // Out of fds or memory: keep the listener, retry shortly, without
        // spinning.
        self.countAcceptError()
        let weak = WeakLoopConfined(self)
        self.retry = try? self.loop.schedule(after: PipeListener.acceptRetryDelay) { weak.value?.accept() }
        self.acceptFailures += 1
        self.logAcceptFailure(error)
      }
    }
  }

  private func countAcceptError() {
    guard let core else { return }
    core.update { $0.statistics.acceptErrors += 1 }
    if let meters = core.meters { meters.acceptFailed() }
  }

  /// A datagram the UDP endpoint dropped (see ``DatagramEndpoint/droppedDatagrams``):
  /// counted in the socket's ``SocketStatistics/datagramDrops``.
  private func countDatagramDrop() {
    guard let core else { return }
    core.update { $0.statistics.datagramDrops += 1 }
    if let meters = core.meters { meters.datagramDropped() }
  }

  /// The first failure of a run is a notice; the next ones, until an accept
  /// succeeds, are debug: out of fds, the listener would otherwise log ten
  /// notices a second.
  private func logAcceptFailure(_ error: IOError) {
    guard let logger = core?.logger else { return }
    let failures = acceptFailures
    logger.log(
      level: failures == 1 ? .notice : .debug, "accept failed; retrying",
      metadata: [
        "listener.url": "\(url)", "error": "\(error)",
        "accept.retry_ms": "\(PipeListener.acceptRetryDelay.inMilliseconds)",
        "accept.failures_in_a_row": "\(failures)",
      ])
  }

  /// The UDP socket stopped receiving for good (its peers failed with it).
  private func receiveFailed(_ error: IOError) {
    countAcceptError()
    guard let logger = core?.logger else { return }
    logger.log(
      level: error.isCancellation ? .debug : .notice, "listener stopped receiving",
      metadata: ["listener.url": "\(url)", "error": "\(error)"])
  }

  private func adopt(_ client: Int32) {
    guard !closed, let core, !core.closing else {
      Sys.close(client)
      return
    }
    if url.isIP {
      do throws(IOError) {
        try Sockets.configureTCP(client, core.options)
      } catch {
        // A connection whose options cannot be set is refused (as SwiftNIO
        // closes such a child channel); the listener goes on.
        Sys.close(client)
        countAcceptError()
        core.logger.notice(
          "accepted connection refused", metadata: ["listener.url": "\(url)", "error": "\(error)"])
        return
      }
    }
    core.attach(StreamTransport(loop: loop, fd: client), dialer: nil, url: url)
  }

  private func adoptPeer(_ address: SocketAddress) -> PeerDatagramTransport? {
    guard !closed, let core, !core.closing, let endpoint else { return nil }
    let transport = PeerDatagramTransport(endpoint: endpoint, address: address)
    core.attach(transport, dialer: nil, url: url)
    return transport
  }

  /// An in-process dialer's transport; false when this listener is closed
  /// or its socket closing.
  func adoptInproc(_ transport: MemoryTransport) -> Bool {
    guard !closed, let core, !core.closing else { return false }
    core.attach(transport, dialer: nil, url: url)
    return true
  }

  /// Datagrams the UDP endpoint dropped.
  var droppedDatagrams: Int { endpoint?.droppedDatagrams ?? 0 }

  /// Stops accepting and releases the address (the Unix socket file
  /// included). Pipes already accepted stay. On the loop, or before start.
  func close() {
    guard !closed else { return }
    closed = true
    retry?.cancel()
    switch url {
    case .inproc(let name):
      Inproc.unregister(name, self)
    case .udp:
      if let endpoint {
        endpoint.closeListener()  // the UDP socket closes with its last peer
      } else {
        Sys.close(fd)
      }
    case .tcp, .ipc(_):
      if let acceptHandle { loop.cancel(acceptHandle) }
      acceptHandle = nil
      Sys.close(fd)
      if case .ipc(let address) = url {
        let path = String(address.description.dropFirst("unix:".count))
        if !path.isEmpty { removeSocketFile(path) }
      }
    }
  }

  /// Removes a Unix-domain listener's socket file. Already gone (ENOENT) is
  /// fine; another failure leaves the file, and is logged.
  private func removeSocketFile(_ path: String) {
    do throws(IOError) {
      try Sys.unlink(path)
    } catch {
      if error.code != ENOENT {
        core?.logger.notice("socket file not removed", metadata: ["listener.url": "\(url)", "error": "\(error)"])
      }
    }
  }

  deinit {
    // Never started (the loop was gone): release the fd here.
    if !closed && endpoint == nil && fd >= 0 { Sys.close(fd) }
    if !closed, case .inproc(let name) = url { Inproc.unregister(name, self) }
  }
}

extension TransportURL {
  var isIP: Bool {
    switch self {
    case .tcp, .udp: true
    case .ipc, .inproc: false
    }
  }
}
