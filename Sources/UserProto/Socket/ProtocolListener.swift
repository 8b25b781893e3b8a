import Glibc
import Locking
import MaskCore

/// A listening TCP or Unix-domain socket that creates a protocol socket of
/// type `S` for each connection, or (``udp(on:loop:options:backlog:queuesConnections:configure:)``)
/// a UDP socket that creates one for each peer address it hears from. Its
/// ``fileDescriptor`` is readable exactly when ``tryAccept()`` would return
/// a socket.
public final class ProtocolListener<S: ProtocolSocket>: @unchecked Sendable {
  /// The event loop the listener and its accepted sockets run on.
  public let loop: EventLoop
  /// The bound address (with the kernel-chosen port when 0 was asked).
  public let localAddress: SocketAddress
  /// Options for accepted sockets.
  public let options: SocketOptions
  /// The pollable descriptor: readable while a connection is waiting.
  public var fileDescriptor: Int32 { mask.fileDescriptor }
  /// The mask fd behind ``fileDescriptor``.
  public let mask: MaskFD
  /// Accepted connections waiting for the application, at most this many;
  /// accepting pauses (the kernel backlog holds the rest) until one is taken.
  public let backlog: Int

  private struct State {
    var pending: [S] = []
    var closed = false
    var acceptPaused = false
    var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    var nextWaiter: UInt64 = 0
    /// Accept failures (EMFILE...) seen; accepting retries after a pause.
    var acceptErrors = 0
    /// Writing the mask fd failed, so its readiness can no longer be
    /// trusted: ``tryAccept()`` hands out what is queued, then throws this.
    var maskFailure: SocketError?

    /// Shows `events` on the mask fd; a failure is kept, never ignored.
    mutating func show(_ events: MaskEvents, on mask: MaskFD) {
      guard maskFailure == nil else { return }
      do throws(MaskError) {
        try mask.set(events)
      } catch {
        maskFailure = .maskUpdateFailed(error, "listener mask fd update")
      }
    }
  }
  private let state = Lock(State())
  private let fd: Int32
  /// The shared UDP socket of a datagram listener; nil for streams.
  private let endpoint: DatagramEndpoint?
  /// The accept in flight. Loop-confined; in a box so that the closing
  /// task reads it on the loop without holding `self` (from `deinit`).
  private let accepting = AcceptBox()
  private var acceptHandle: IOHandle? {
    get { accepting.handle }
    set { accepting.handle = newValue }
  }
  /// Loop-confined; for tests: runs after a connection's socket is made,
  /// before it is queued (where a concurrent ``close()`` can land).
  var beforeQueueing: (() -> Void)?

  /// Runs on the loop for each new socket, before its connection starts.
  private let configure: (@Sendable (S) -> Void)?
  /// False when `configure` takes ownership of each socket (servers that
  /// answer on the loop): accepted sockets are then not queued.
  private let queuesConnections: Bool

  /// Listens on `address` (`SocketAddress(ipv4: "127.0.0.1", port: 0)` for
  /// an ephemeral port). `configure` runs on the loop for each accepted
  /// socket before it starts (e.g. to call ``ProtocolSocket/handleMessagesOnLoop(_:)``).
  public convenience init(
    on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions(), backlog: Int = 128,
    queuesConnections: Bool = true, configure: (@Sendable (S) -> Void)? = nil
  ) throws {
    try self.init(
      datagram: false, on: address, loop: loop, options: options, backlog: backlog,
      queuesConnections: queuesConnections, configure: configure)
  }

  /// A UDP server on `address`: one unconnected UDP socket, and one socket
  /// of type `S` for each peer address (IP and port) a datagram arrives
  /// from, as a TCP listener makes one per connection. Each datagram is one
  /// message; a socket's messages go to its peer's address. The peers share
  /// the UDP socket: each `S` still has its own mask fd, and the UDP socket
  /// stays open (after ``close()`` too) while any of them is.
  ///
  /// Datagrams are dropped, and counted in ``droppedDatagrams``, from new
  /// peers while `backlog` sockets wait to be accepted or after ``close()``,
  /// and for a peer whose socket's receive queue is full (UDP's own policy:
  /// nothing blocks the other peers). Closing a peer's socket forgets the
  /// peer; its next datagram makes a new socket.
  public static func udp(
    on address: SocketAddress, loop: EventLoop, options: SocketOptions = SocketOptions(), backlog: Int = 128,
    queuesConnections: Bool = true, configure: (@Sendable (S) -> Void)? = nil
  ) throws -> ProtocolListener<S> {
    try ProtocolListener(
      datagram: true, on: address, loop: loop, options: options, backlog: backlog,
      queuesConnections: queuesConnections, configure: configure)
  }

  private init(
    datagram: Bool, on address: SocketAddress, loop: EventLoop, options: SocketOptions, backlog: Int,
    queuesConnections: Bool, configure: (@Sendable (S) -> Void)?
  ) throws {
    self.configure = configure
    self.queuesConnections = queuesConnections
    self.loop = loop
    self.options = options
    self.backlog = backlog
    mask = try MaskFD(usage: .events([.readable]))
    do {
      (fd, localAddress) = try datagram ? Sockets.udpBound(on: address) : Sockets.listen(on: address)
    } catch {
      try? mask.close()
      throw error
    }
    if datagram {
      let box = WeakListener<S>()
      endpoint = DatagramEndpoint(
        loop: loop, fd: fd, localAddress: localAddress,
        newPeer: { box.listener?.adopt(peer: $0) },
        failed: { _ in box.listener?.state.withLock { $0.acceptErrors += 1 } })
      box.listener = self
    } else {
      endpoint = nil
    }
    try loop.execute { [self] in startAccepting() }
  }

  /// Datagrams a UDP listener dropped (see ``udp(on:loop:options:backlog:queuesConnections:configure:)``);
  /// 0 for stream listeners.
  public var droppedDatagrams: Int { endpoint?.droppedDatagrams ?? 0 }

  /// Accept failures seen so far (EMFILE and the like); each one pauses
  /// accepting for 100 ms instead of failing the listener.
  public var acceptErrors: Int { state.withLock { $0.acceptErrors } }

  private func startAccepting() {
    if let endpoint {
      endpoint.start()  // new peers are refused while paused instead
      return
    }
    guard acceptHandle == nil, !state.withLock({ $0.closed || $0.acceptPaused }) else { return }
    acceptHandle = try? loop.accept(listener: fd) { [weak self] result in
      guard let self else { return }
      switch result {
      case .success(let client):
        self.adopt(client)
      case .failure(let error):
        self.acceptHandle = nil
        guard !error.isCancellation else { return }
        // Out of fds or memory: keep listening, retry shortly.
        self.state.withLock { $0.acceptErrors += 1 }
        _ = try? self.loop.schedule(after: .milliseconds(100)) { [weak self] in self?.startAccepting() }
      }
    }
  }

  private func adopt(_ client: Int32) {
    if state.withLock({ $0.closed }) {
      Glibc.close(client)
      return
    }
    if localAddress.isIP { try? Sockets.configureTCP(client, options) }
    let socket: S
    do {
      socket = try S(loop: loop, options: options)
    } catch {
      // No fds left for the mask: refuse this connection, keep listening.
      Glibc.close(client)
      state.withLock { $0.acceptErrors += 1 }
      return
    }
    configure?(socket)
    socket.attach(StreamTransport(loop: loop, fd: client))
    queue(socket)
  }

  /// A datagram came from a new peer: its socket, or nil to drop the
  /// datagram (closed, or `backlog` sockets are waiting). On the loop.
  private func adopt(peer address: SocketAddress) -> PeerDatagramTransport? {
    guard let endpoint, !state.withLock({ $0.closed || $0.acceptPaused }) else { return nil }
    let socket: S
    do {
      socket = try S(loop: loop, options: options)
    } catch {
      state.withLock { $0.acceptErrors += 1 }
      return nil
    }
    socket.maximumDatagramSize = endpoint.maximumDatagramSize
    let transport = PeerDatagramTransport(endpoint: endpoint, address: address)
    configure?(socket)
    socket.attach(transport)
    queue(socket)
    return transport
  }

  private func queue(_ socket: S) {
    guard queuesConnections else { return }
    beforeQueueing?()
    let queued = state.withLock { s -> ([CheckedContinuation<Void, Never>], Bool)? in
      // close() may have run since the check above: it took the queue, so
      // a socket added now would never be accepted nor aborted.
      if s.closed { return nil }
      s.pending.append(socket)
      s.show([.readable], on: mask)
      let w = Array(s.waiters.values)
      s.waiters = [:]
      if s.pending.count >= backlog { s.acceptPaused = true }
      return (w, s.acceptPaused)
    }
    guard let (waiters, full) = queued else {
      socket.abort()
      return
    }
    for w in waiters { w.resume() }
    if full, let handle = acceptHandle {
      loop.cancel(handle)
      acceptHandle = nil
    }
  }

  /// Takes the next accepted connection, or nil when none is waiting.
  /// - Throws: ``SocketError/closed`` after ``close()``; once writing the
  ///   mask fd failed (its readiness is then stale), the failure, after the
  ///   connections already queued have been handed out.
  public func tryAccept() throws(SocketError) -> S? {
    let (socket, resume) = try state.withLock { (s: inout State) throws(SocketError) -> (S?, Bool) in
      if s.closed { throw .closed }
      guard !s.pending.isEmpty else {
        if let failure = s.maskFailure { throw failure }
        return (nil, false)
      }
      let socket = s.pending.removeFirst()
      if s.pending.isEmpty { s.show([], on: mask) }
      let resume = s.acceptPaused && s.pending.count < backlog
      if resume { s.acceptPaused = false }
      return (socket, resume)
    }
    if resume { try? loop.execute { [self] in startAccepting() } }
    return socket
  }

  /// Waits for the next connection.
  public func accept() async throws -> S {
    while true {
      try Task.checkCancellation()
      if let socket = try tryAccept() { return socket }
      let id = state.withLock { s -> UInt64 in
        s.nextWaiter += 1
        return s.nextWaiter
      }
      await withTaskCancellationHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
          let ready = state.withLock { s -> Bool in
            if !s.pending.isEmpty || s.closed || s.maskFailure != nil || Task.isCancelled { return true }
            s.waiters[id] = c
            return false
          }
          if ready { c.resume() }
        }
      } onCancel: {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
      }
    }
  }

  /// Dropped without ``close()``: the same as closing it, so the port is
  /// released and no fd is left behind.
  deinit { _ = shutDown() }

  /// Stops listening and aborts connections nobody accepted.
  public func close() throws(SocketError) {
    guard shutDown() else { throw .closed }
  }

  /// Closes the listener once; false if it already was.
  private func shutDown() -> Bool {
    let taken = state.withLock { s -> ([S], [CheckedContinuation<Void, Never>])? in
      if s.closed { return nil }
      s.closed = true
      defer {
        s.pending = []
        s.waiters = [:]
      }
      return (s.pending, Array(s.waiters.values))
    }
    guard let (pending, waiters) = taken else { return false }
    for socket in pending { socket.abort() }
    for w in waiters { w.resume() }
    try? mask.close()
    let (loop, listenFD, endpoint, accepting) = (self.loop, fd, self.endpoint, self.accepting)
    do {
      try loop.execute {
        if let endpoint {
          endpoint.closeListener()
          return
        }
        if let handle = accepting.handle { loop.cancel(handle) }
        accepting.handle = nil
        Glibc.close(listenFD)
      }
    } catch {
      // The loop is gone (its shutdown ended the endpoint's receive, which
      // closed the UDP socket).
      if endpoint == nil { Glibc.close(listenFD) }
    }
    return true
  }
}

/// A listener's accept operation, loop-confined.
private final class AcceptBox: @unchecked Sendable {
  var handle: IOHandle?
}

/// The listener a datagram endpoint makes sockets for, without keeping it
/// alive.
private final class WeakListener<S: ProtocolSocket>: @unchecked Sendable {
  weak var listener: ProtocolListener<S>?
}
