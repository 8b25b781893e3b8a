import Glibc

/// An I/O operation or readiness watch in flight on a loop.
public struct IOHandle: Sendable, Hashable {
  let token: UInt64
}

extension EventLoop {
  private func requireLoop(_ what: String) throws(LoopError) {
    guard inEventLoop else { throw LoopError.notOnLoop(what) }
  }

  private func start(_ operation: LoopOperation, _ handler: @escaping OperationTable.Handler) throws(IOError)
    -> IOHandle
  {
    let token = operations.insert(handler)
    do {
      try engine.submit(operation, token: token)
    } catch {
      operations.release(token)
      throw error
    }
    return IOHandle(token: token)
  }

  /// Watches `fd` for readiness, on the loop. `handler` runs on the loop
  /// whenever the fd signals one of `events` (io_uring multishot POLL_ADD,
  /// or epoll edge-triggered): treat it as a hint and re-check the fd, as
  /// io_uring reports the wake-up's events, not the level. Cancel the watch
  /// before closing the fd.
  public func watch(
    fd: Int32, events: MaskEvents, _ handler: @escaping (Result<MaskEvents, IOError>) -> Void
  ) throws -> IOHandle {
    try requireLoop("watch(fd:)")
    return try start(.poll(fd: fd, events: events.rawValue)) { value in
      switch value {
      case .events(let bits): handler(.success(MaskEvents(rawValue: bits & MaskEvents.all.rawValue)))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Accepts connections on a listening socket, on the loop. `handler` gets
  /// each new socket (non-blocking, close-on-exec; the handler owns it), or
  /// one final error after which accepting stops.
  public func accept(listener fd: Int32, _ handler: @escaping (Result<Int32, IOError>) -> Void) throws -> IOHandle {
    try requireLoop("accept(listener:)")
    return try start(.accept(fd: fd)) { value in
      switch value {
      case .accepted(let client): handler(.success(client))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Connects a non-blocking socket, on the loop.
  public func connect(socket fd: Int32, to address: SocketAddress, _ handler: @escaping (Result<Void, IOError>) -> Void)
    throws -> IOHandle
  {
    try requireLoop("connect(socket:to:)")
    return try start(.connect(fd: fd, address: address)) { value in
      switch value {
      case .connected: handler(.success(()))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Receives a stream of chunks from a connected socket, on the loop. An
  /// empty chunk is end-of-stream; an error or end-of-stream ends it. With
  /// `datagrams`, each chunk is one whole datagram (empty ones included);
  /// one longer than 64 KiB is dropped and counted in ``truncatedDatagrams``.
  public func receive(
    socket fd: Int32, datagrams: Bool = false, _ handler: @escaping (Result<[UInt8], IOError>) -> Void
  ) throws -> IOHandle {
    try requireLoop("receive(socket:)")
    return try start(.receive(fd: fd, datagram: datagrams)) { value in
      switch value {
      case .received(let bytes): handler(.success(bytes))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Sends `bytes` once, on the loop; the handler gets how many were sent
  /// (possibly fewer: send the rest after it). Keep one send in flight per
  /// socket to keep the byte order.
  public func send(socket fd: Int32, _ bytes: [UInt8], _ handler: @escaping (Result<Int, IOError>) -> Void) throws
    -> IOHandle
  {
    try requireLoop("send(socket:)")
    return try start(.send(fd: fd, bytes: bytes)) { value in
      switch value {
      case .sent(let n): handler(.success(n))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Receives datagrams with their senders' addresses from an unconnected
  /// datagram socket (UDP), on the loop, one handler call per datagram
  /// (empty ones included), until an error or cancel; one longer than
  /// 64 KiB is dropped and counted in ``truncatedDatagrams``. io_uring:
  /// RECVMSG; epoll: recvfrom(2) until EAGAIN.
  public func receiveDatagrams(
    socket fd: Int32, _ handler: @escaping (Result<(bytes: [UInt8], from: SocketAddress), IOError>) -> Void
  ) throws -> IOHandle {
    try requireLoop("receiveDatagrams(socket:)")
    return try start(.receiveFrom(fd: fd)) { value in
      switch value {
      case .receivedFrom(let bytes, let sender): handler(.success((bytes, sender)))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Sends one datagram to `address` from an unconnected datagram socket,
  /// on the loop; the handler gets the bytes sent (the whole datagram).
  /// io_uring: SENDMSG; epoll: sendto(2).
  public func send(
    socket fd: Int32, _ bytes: [UInt8], to address: SocketAddress, _ handler: @escaping (Result<Int, IOError>) -> Void
  ) throws -> IOHandle {
    try requireLoop("send(socket:to:)")
    return try start(.sendTo(fd: fd, bytes: bytes, address: address)) { value in
      switch value {
      case .sent(let n): handler(.success(n))
      case .failed(let error): handler(.failure(error))
      default: break
      }
    }
  }

  /// Cancels an operation or watch, on the loop. Its handler is not called
  /// again, not even with the cancellation.
  public func cancel(_ handle: IOHandle) {
    guard operations.isLive(handle.token) else { return }
    operations.release(handle.token)
    engine.cancel(token: handle.token)
  }

  /// Stops an operation but keeps delivering what it already produced: a
  /// multishot receive hands over the data that arrived before the stop, then
  /// its handler gets one final `ECANCELED` failure. On the loop.
  public func stop(_ handle: IOHandle) {
    guard operations.isLive(handle.token) else { return }
    engine.cancel(token: handle.token)
  }

  /// Operations and watches in flight.
  public var operationsInFlight: Int { operations.count }
}
