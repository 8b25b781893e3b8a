import CUserProtoShim
import Glibc

// Submitting operations: each one's SQE and the record of what it owns,
// arming (and re-arming) them, and the pool of send buffers.
extension URingEngine {
  func submit(_ operation: LoopOperation, token: UInt64) throws(IOError) {
    switch operation {
    case .poll(let fd, let events):
      try checkFile(fd)
      try armPoll(fd: fd, events: events, token: token)
      track(fd, token)
    case .accept(let fd):
      try checkFile(fd)
      if refusedOperation(.accept, token) {
        records[token] = .accept(fd: fd, multishot: false)
      } else {
        try armAccept(fd: fd, token: token)
      }
      track(fd, token)
    case .connect(let fd, let address):
      try checkFile(fd)
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: address.storage.count, alignment: 8)
      buffer.copyBytes(from: address.storage)
      if !refusedOperation(.connect, token) {
        do throws(IOError) {
          try prep { up_ring_prep_connect(ring, fd, buffer.baseAddress, UInt32(buffer.count), token) }
        } catch {
          buffer.deallocate()
          throw error
        }
      }
      records[token] = .connect(fd: fd, buffer: buffer)
      track(fd, token)
    case .receive(let fd, let datagram):
      try checkFile(fd)
      if refusedOperation(.receive, token) {
        // A single-shot record (a buffer of its own), so the injected errno
        // is not taken for a multishot refusal.
        records[token] = .receive(
          fd: fd, buffer: .allocate(byteCount: URingEngine.singleReceiveSize, alignment: 8), datagram: datagram)
      } else {
        try armReceive(fd: fd, token: token, datagram: datagram)
      }
      track(fd, token)
    case .send(let fd, let bytes):
      let buffer = sendBuffer(for: bytes.count)
      buffer.copyBytes(from: bytes)
      if !refusedOperation(.send, token) {
        do throws(IOError) {
          try prep { up_ring_prep_send(ring, fd, buffer.baseAddress, bytes.count, token) }
        } catch {
          recycleSendBuffer(buffer)
          throw error
        }
      }
      records[token] = .send(buffer)
    case .receiveFrom(let fd):
      try checkFile(fd)
      try armReceiveFrom(fd: fd, token: token, refusable: true)
      track(fd, token)
    case .sendTo(let fd, let bytes, let address):
      guard let message = up_msg_alloc(bytes.count) else { throw IOError("sendmsg buffer", ENOMEM) }
      bytes.withUnsafeBytes { source in
        if let base = source.baseAddress { up_msg_data(message).copyMemory(from: base, byteCount: source.count) }
      }
      address.withSockaddr { up_msg_prepare_send(message, bytes.count, $0, $1) }
      if !refusedOperation(.send, token) {
        do throws(IOError) {
          try prep { up_ring_prep_sendmsg(ring, fd, message, token) }
        } catch {
          up_msg_free(message)
          throw error
        }
      }
      records[token] = .sendTo(message: message)
    }
  }

  /// Test hook: an operation whose call has a fault injected (``LoopFaults``)
  /// is not submitted; it completes with `-errno` at the next reap, as if
  /// the kernel had refused it. An injected EINTR is consumed and the
  /// operation submitted, as a retry would.
  private func refusedOperation(_ call: LoopFaults.Call, _ token: UInt64) -> Bool {
    guard let code = Sys.injectedFailure(call) else { return false }
    refusals.append(up_cqe(user_data: token, res: -code, flags: 0))
    return true
  }

  /// The largest datagram a RECVMSG takes whole: 65,535 bytes of IPv4
  /// payload less the UDP header is the most UDP can carry.
  static let datagramReceiveSize = 65_536

  func armReceiveFrom(fd: Int32, token: UInt64, refusable: Bool = false) throws(IOError) {
    let message: OpaquePointer
    if case .receiveFrom(_, let existing) = records[token] {
      message = existing
    } else {
      guard let made = up_msg_alloc(URingEngine.datagramReceiveSize) else {
        throw IOError("recvmsg buffer", ENOMEM)
      }
      message = made
    }
    records[token] = .receiveFrom(fd: fd, message: message)
    up_msg_prepare_receive(message)
    if refusable && refusedOperation(.receive, token) { return }
    do throws(IOError) {
      try prep { up_ring_prep_recvmsg(ring, fd, message, token) }
    } catch {
      records[token] = nil
      up_msg_free(message)
      throw error
    }
  }

  // MARK: Arming

  /// Test hook: a multishot request refused as a kernel without it would
  /// (no SQE; a completion with `-errno` and no data).
  private func refusedByInjection(_ multishot: Bool, _ token: UInt64) -> Bool {
    guard multishot, let code = Sys.injected(.uringMultishot) else { return false }
    refusals.append(up_cqe(user_data: token, res: -code, flags: 0))
    return true
  }

  func armPoll(fd: Int32, events: UInt32, token: UInt64) throws(IOError) {
    let multishot = multishotPoll
    if !refusedByInjection(multishot, token) {
      try prep { up_ring_prep_poll_add(ring, fd, events, token, multishot ? 1 : 0) }
    }
    records[token] = .poll(fd: fd, events: events, multishot: multishot)
  }

  func armAccept(fd: Int32, token: UInt64) throws(IOError) {
    let multishot = multishotAccept
    if !refusedByInjection(multishot, token) {
      try prep { up_ring_prep_accept(ring, fd, multishot ? 1 : 0, token) }
    }
    records[token] = .accept(fd: fd, multishot: multishot)
  }

  /// Streams use the multishot receive with provided buffers where the
  /// kernel has it; datagrams (which must not be cut at a provided buffer's
  /// 16 KiB) and older kernels use single receives into a 64 KiB buffer.
  func armReceive(fd: Int32, token: UInt64, datagram: Bool) throws(IOError) {
    if multishotReceive && !datagram {
      // A refused submission's record had a buffer (refusedOperation).
      if case .receive(_, let unused?, _) = records[token] {
        unused.deallocate()
        records[token] = .receive(fd: fd, buffer: nil, datagram: false)
      }
      if !refusedByInjection(true, token) {
        try prep { up_ring_prep_recv_multishot(ring, fd, URingEngine.bufferGroup, token) }
      }
      records[token] = .receive(fd: fd, buffer: nil, datagram: false)
    } else {
      let buffer: UnsafeMutableRawBufferPointer
      if case .receive(_, let existing?, _) = records[token] {
        buffer = existing
      } else {
        buffer = .allocate(byteCount: URingEngine.singleReceiveSize, alignment: 8)
      }
      records[token] = .receive(fd: fd, buffer: buffer, datagram: datagram)
      do {
        // MSG_TRUNC on a stream socket would discard data: datagrams only.
        let flags = datagram ? Int32(MSG_TRUNC) : 0
        try prep { up_ring_prep_recv(ring, fd, buffer.baseAddress, buffer.count, flags, token) }
      } catch {
        records[token] = nil
        buffer.deallocate()
        throw error
      }
    }
  }

  // MARK: Send buffers

  private static let pooledSendSize = 256 * 1024
  private static let sendPoolLimit = 32

  private func sendBuffer(for count: Int) -> UnsafeMutableRawBufferPointer {
    if count <= URingEngine.pooledSendSize, let pooled = sendPool.popLast() {
      return UnsafeMutableRawBufferPointer(rebasing: pooled[0..<max(count, 1)])
    }
    let size = count <= URingEngine.pooledSendSize ? URingEngine.pooledSendSize : count
    return UnsafeMutableRawBufferPointer(
      rebasing: UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)[0..<max(count, 1)])
  }

  func recycleSendBuffer(_ buffer: UnsafeMutableRawBufferPointer) {
    // Buffers are carved from allocations of at least pooledSendSize.
    if buffer.count <= URingEngine.pooledSendSize && sendPool.count < URingEngine.sendPoolLimit {
      sendPool.append(UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: URingEngine.pooledSendSize))
    } else {
      buffer.deallocate()
    }
  }
}
