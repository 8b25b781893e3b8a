import Glibc

/// A TCP or Unix-domain stream socket driven by the loop's receive and send
/// operations, with one send in flight so bytes stay in order.
final class StreamTransport: Transport, @unchecked Sendable {
  let loop: EventLoop
  let isDatagram: Bool
  /// The kernel socket (owned: closed with the transport).
  let fd: Int32
  private var connectTo: SocketAddress?
  private weak var delegate: (any TransportDelegate)?
  private var receiveHandle: IOHandle?
  private var sendHandle: IOHandle?
  private var connectHandle: IOHandle?
  private var outbound: [[UInt8]] = []
  private var outboundHead = 0
  /// Bytes of `outbound[outboundHead]` already sent (partial sends).
  private var headOffset = 0
  private var paused = false
  private var stopping = false
  private var shutdownRequested = false
  private var finished = false
  /// Coalesce queued messages into one send of at most this many bytes.
  private static let maximumSend = 256 * 1024

  /// Wraps a connected (accepted) socket, or one to connect to `address`.
  init(loop: EventLoop, fd: Int32, connectTo address: SocketAddress? = nil, datagram: Bool = false) {
    self.loop = loop
    self.fd = fd
    connectTo = address
    isDatagram = datagram
  }

  func start(_ delegate: any TransportDelegate) {
    self.delegate = delegate
    if let address = connectTo {
      do {
        connectHandle = try loop.connect(socket: fd, to: address) { [weak self] result in
          guard let self, !self.finished else { return }
          self.connectHandle = nil
          switch result {
          case .success:
            self.connectTo = nil
            self.delegate?.transportConnected(
              local: try? Sockets.localAddress(self.fd), remote: try? Sockets.remoteAddress(self.fd))
            self.startReading()
            self.pump()
          case .failure(let error):
            self.fail(error)
          }
        }
      } catch {
        fail(error as? IOError ?? IOError("connect", EIO))
      }
    } else {
      delegate.transportConnected(local: try? Sockets.localAddress(fd), remote: try? Sockets.remoteAddress(fd))
      startReading()
    }
  }

  private func startReading() {
    guard !finished, !paused, receiveHandle == nil, connectTo == nil else { return }
    do {
      receiveHandle = try loop.receive(socket: fd, datagrams: isDatagram) { [weak self] result in
        guard let self, !self.finished else { return }
        switch result {
        case .success(let bytes) where bytes.isEmpty && !self.isDatagram:
          self.receiveHandle = nil
          self.delegate?.transportReachedEnd()
        case .success(let bytes):
          self.delegate?.transportReceived(bytes)
        case .failure(let error) where error.isCancellation && self.stopping:
          // A pause completed: everything received before it was delivered.
          self.receiveHandle = nil
          self.stopping = false
          if !self.paused { self.startReading() }
        case .failure(let error):
          self.receiveHandle = nil
          self.fail(error)
        }
      }
    } catch {
      fail(error as? IOError ?? IOError("recv", EIO))
    }
  }

  func pauseReading() {
    guard !paused else { return }
    paused = true
    if let handle = receiveHandle, !stopping {
      stopping = true
      loop.stop(handle)
    }
  }

  func resumeReading() {
    guard paused else { return }
    paused = false
    if !stopping { startReading() }
  }

  func write(_ bytes: [UInt8]) {
    guard !finished else { return }
    // Zero bytes are nothing on a stream (sending them would complete with
    // 0 and never advance); a datagram transport sends an empty datagram.
    if bytes.isEmpty && !isDatagram { return }
    outbound.append(bytes)
    pump()
  }

  /// Messages in the queue's storage, sent ones not yet dropped included.
  var storedMessages: Int { outbound.count }
  /// Messages (or their tails) not yet sent.
  var queuedMessages: Int { outbound.count - outboundHead }

  private func pump() {
    guard !finished, sendHandle == nil, connectTo == nil else { return }
    guard outboundHead < outbound.count else {
      if shutdownRequested {
        shutdownRequested = false
        do throws(IOError) {
          try Sys.shutdownWrite(fd)
        } catch {
          // ENOTCONN: the connection is already gone (the peer reset it);
          // the receive side reports how. Anything else fails the transport.
          if error.code != ENOTCONN {
            fail(error)
            return
          }
        }
        delegate?.transportFinishedWriting()
      }
      return
    }
    var chunk: [UInt8]
    if isDatagram {
      chunk = outbound[outboundHead]
    } else {
      // Coalesce queued messages into one send, sized first so the bytes
      // are copied once; a lone message is sent as it is.
      let head = outbound[outboundHead]
      var total = head.count - headOffset
      var last = outboundHead + 1
      while last < outbound.count && total + outbound[last].count <= StreamTransport.maximumSend {
        total += outbound[last].count
        last += 1
      }
      if last == outboundHead + 1 && headOffset == 0 {
        chunk = head
      } else {
        chunk = []
        chunk.reserveCapacity(total)
        chunk += head[headOffset...]
        for i in (outboundHead + 1)..<last { chunk += outbound[i] }
      }
    }
    do {
      sendHandle = try loop.send(socket: fd, chunk) { [weak self] result in
        guard let self, !self.finished else { return }
        self.sendHandle = nil
        switch result {
        case .success(let n):
          let messages = self.consume(n)
          self.delegate?.transportWrote(n, messages: messages)
          self.pump()
        case .failure(let error):
          self.fail(error)
        }
      }
    } catch {
      fail(error as? IOError ?? IOError("send", EIO))
    }
  }

  /// Drops `n` sent bytes (one datagram) from the front of the queue,
  /// stepping over empty entries; returns how many entries were finished.
  private func consume(_ n: Int) -> Int {
    let before = outboundHead
    if isDatagram {
      outboundHead += 1
    } else {
      var remaining = n
      while outboundHead < outbound.count {
        let head = outbound[outboundHead].count - headOffset
        if remaining < head {
          headOffset += remaining
          break
        }
        remaining -= head
        outboundHead += 1
        headOffset = 0
      }
    }
    let finished = outboundHead - before
    compact()
    return finished
  }

  /// Releases sent messages once they are half the storage (amortised O(1)
  /// per message), so memory stays proportional to what is unsent even when
  /// the queue never empties (a sender refilling at the low watermark).
  private func compact() {
    if outboundHead == outbound.count {
      outbound.removeAll(keepingCapacity: outbound.count <= 1024)
      outboundHead = 0
    } else if outboundHead >= 64 && outboundHead * 2 >= outbound.count {
      outbound.removeFirst(outboundHead)
      outboundHead = 0
    }
  }

  func shutdownWrite() {
    shutdownRequested = true
    pump()
  }

  private func fail(_ error: IOError) {
    guard !finished else { return }
    let delegate = self.delegate
    close()
    delegate?.transportFailed(error)
  }

  func reset() {
    guard !finished else { return }
    if !isDatagram {
      // SO_LINGER with a zero timeout: close(2) sends RST, not FIN.
      do throws(IOError) {
        try Sys.setOption(fd, SOL_SOCKET, SO_LINGER, Glibc.linger(l_onoff: 1, l_linger: 0), "setsockopt(SO_LINGER)")
      } catch {
        // The close still happens; the peer then sees an end of stream
        // instead of a reset. Nothing is left to report it to: no
        // callback follows a reset.
      }
    }
    close()
  }

  func close() {
    guard !finished else { return }
    finished = true
    if let handle = receiveHandle { loop.cancel(handle) }
    if let handle = sendHandle { loop.cancel(handle) }
    // A connect still in flight is cancelled too: left alone, io_uring's
    // would keep the file and could still complete a handshake.
    if let handle = connectHandle { loop.cancel(handle) }
    receiveHandle = nil
    sendHandle = nil
    connectHandle = nil
    outbound = []
    Sys.close(fd)
  }
}
