import Glibc

/// How a socket gets its connection, and what the transport tells it.
extension ProtocolSocket: TransportDelegate {
  /// Attaches a transport and starts it, on the loop.
  final func attach(_ transport: any Transport) {
    self.transport = transport
    transport.start(self)
  }

  func transportConnected(local: SocketAddress?, remote: SocketAddress?) {
    update { s in
      if case .connecting = s.connection { s.connection = .connected }
      s.localAddress = local
      s.remoteAddress = remote
    }
    notify(.connected)
    flush()
  }

  func transportReceived(_ bytes: [UInt8]) {
    if state.withLock({ $0.closedByUser }) { return }  // lingering close: discard
    do {
      try received(bytes)
    } catch {
      fail(error as? SocketError ?? .protocolViolation("\(error)"))
    }
  }

  func transportReachedEnd() {
    let closing = state.withLock { s -> Bool in
      if s.closedByUser { s.peerFinished = true }
      return s.closedByUser
    }
    if closing {
      // Lingering close: finish once our own output is out too.
      finishCloseIfDone()
      return
    }
    do {
      try receivedEndOfStream()
    } catch {
      fail(error as? SocketError ?? .protocolViolation("\(error)"))
      return
    }
    let connection = update { s -> ConnectionState in
      s.peerFinished = true
      s.recomputeConnection()
      return s.connection
    }
    notify(connection)
    // After our shutdown: close once its queued output is out.
    finishCloseIfDone()
  }

  func transportFinishedWriting() {
    outputFinished = true
    // A datagram peer never sends an end: once a closing socket's output
    // is out, there is nothing left to wait for.
    if transport?.isDatagram == true && state.withLock({ $0.closedByUser }) {
      finishClose()
      return
    }
    finishCloseIfDone()
  }

  func transportWrote(_ count: Int, messages: Int) {
    update { s in
      s.transportBytes = max(0, s.transportBytes - count - messages * SocketOptions.perMessageCost)
      s.updateWritableLatch()
    }
  }

  func transportFailed(_ error: IOError) {
    transport = nil
    let closing = state.withLock { $0.closedByUser }
    if closing { return }
    let socketError: SocketError = error.code == ECONNRESET || error.code == EPIPE ? .peerVanished : .transport(error)
    update { s in s.fail(socketError) }
    notify(.failed(socketError))
  }

  // MARK: Transports

  /// Connects to a TCP (`SocketAddress(ipv4:port:)`, `SocketAddress(ipv6:port:)`) or Unix-domain
  /// (`SocketAddress(unixPath:)`) address. Returns at once; messages sent
  /// before the connection is up are queued.
  public static func connect(
    to address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions()
  ) throws -> Self {
    let socket = try Self(loop: loop, options: options)
    let fd = try Sockets.stream(family: address.family)
    if address.isIP { try? Sockets.configureTCP(fd, options) }
    try socket.start(StreamTransport(loop: loop, fd: fd, connectTo: address), fd: fd)
    return socket
  }

  /// A UDP socket bound to `local` and connected to `remote`: each message
  /// is one datagram.
  public static func udp(
    local: SocketAddress, remote: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions()
  ) throws -> Self {
    let socket = try Self(loop: loop, options: options)
    let fd = try Sockets.udp(local: local, remote: remote)
    socket.maximumDatagramSize = Sockets.maximumDatagramSize(fd, family: local.family)
    try socket.start(StreamTransport(loop: loop, fd: fd, datagram: true), fd: fd)
    return socket
  }

  /// Attaches `transport` (over `fd`) on the loop; closes `fd` if the loop
  /// has shut down.
  private final func start(_ transport: StreamTransport, fd: Int32) throws {
    do {
      try loop.execute { self.attach(transport) }
    } catch {
      Glibc.close(fd)
      throw error
    }
  }

}

/// Two sockets of type `S` connected in memory (no kernel transport), for
/// tests and in-process protocols.
public func makeSocketPair<S: ProtocolSocket>(
  _ type: S.Type, loop: EventLoop, options: SocketOptions = SocketOptions()
) throws -> (S, S) {
  let a = try S(loop: loop, options: options)
  let b = try S(loop: loop, options: options)
  let (ta, tb) = MemoryTransport.pair(loop: loop)
  try loop.execute {
    a.attach(ta)
    b.attach(tb)
  }
  return (a, b)
}
