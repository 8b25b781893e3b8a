import CUserProtoShim
import Glibc

// Completions: each CQE becomes the loop's completion, a re-arm at the
// next wait, a multishot given up, or the end of a stale operation.
extension URingEngine {
  /// Arms the operations queued by `handle` again; one that cannot be armed
  /// ends with the error, and one cancelled meanwhile (nothing left in the
  /// kernel to cancel) ends here.
  func rearmPending(_ deliver: (LoopCompletion) -> Void) {
    let pending = rearms
    rearms = []
    for token in pending {
      guard let record = records[token] else { continue }
      func finish(_ error: IOError) {
        release(token)
        deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
      }
      if staleTokens.contains(token) {
        finish(IOError("fd closed while registered", EBADF))
        continue
      }
      if cancelling.contains(token) {
        finish(IOError("cancelled", ECANCELED))
        continue
      }
      do throws(IOError) {
        switch record {
        case .poll(let fd, let events, _): try armPoll(fd: fd, events: events, token: token)
        case .accept(let fd, _): try armAccept(fd: fd, token: token)
        case .receive(let fd, _, let datagram): try armReceive(fd: fd, token: token, datagram: datagram)
        case .receiveFrom(let fd, _): try armReceiveFrom(fd: fd, token: token)
        case .connect, .send, .sendTo: break
        }
      } catch {
        finish(error)
      }
    }
  }

  func handle(_ cqe: up_cqe, _ deliver: (LoopCompletion) -> Void) {
    let token = cqe.user_data
    if token == URingEngine.wakeToken {
      wakeArmed = false
      try? armWake()  // if this fails, wait() retries before blocking
      return
    }
    if token == URingEngine.cancelToken { return }
    guard let record = records[token] else { return }
    let more = cqe.flags & up_IORING_CQE_F_MORE != 0
    let res = cqe.res
    let cancelled = cancelling.contains(token)

    func finish(_ value: CompletionValue) {
      release(token)
      deliver(LoopCompletion(token: token, value: value, isFinal: true))
    }

    if staleTokens.contains(token) {
      // Its fd was closed and the number reused: drop what it produced.
      if cqe.flags & up_IORING_CQE_F_BUFFER != 0, let bufferRing {
        up_bufring_recycle(bufferRing, UInt16(truncatingIfNeeded: cqe.flags >> up_IORING_CQE_BUFFER_SHIFT))
      }
      if case .accept = record, res >= 0 { Sys.close(res) }
      if !more { finish(.failed(IOError("fd closed while registered", EBADF))) }
      return
    }
    if res == -EINVAL && record.multishot && !cancelled {
      // A kernel without this multishot variant: single-shot from now on.
      switch record {
      case .poll:
        if multishotPoll { giveUp("poll") }
        multishotPoll = false
      case .accept:
        if multishotAccept { giveUp("accept") }
        multishotAccept = false
      case .receive:
        if multishotReceive { giveUp("recv") }
        multishotReceive = false
      case .connect, .send, .receiveFrom, .sendTo: break
      }
      rearms.append(token)
      return
    }
    if res == -ECANCELED || (cancelled && res < 0) {
      finish(.failed(IOError("cancelled", ECANCELED)))
      return
    }
    switch record {
    case .poll:
      if res < 0 {
        finish(.failed(IOError("poll", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .events(UInt32(res)), isFinal: false))
      if !more && !cancelled {
        // Single-shot, or the kernel ended the multishot (CQ overflow).
        if record.multishot { pressure.multishotEnded += 1 }
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .accept:
      if res < 0 {
        finish(.failed(IOError("accept", -res)))
        return
      }
      deliver(LoopCompletion(token: token, value: .accepted(res), isFinal: false))
      if !more && !cancelled {
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .connect:
      finish(res < 0 ? .failed(IOError("connect", -res)) : .connected)
    case .send:
      finish(res < 0 ? .failed(IOError("send", -res)) : .sent(Int(res)))
    case .sendTo:
      finish(res < 0 ? .failed(IOError("sendmsg", -res)) : .sent(Int(res)))
    case .receiveFrom(_, let message):
      if res == -EAGAIN || res == -EINTR {
        if !cancelled { rearms.append(token) } else { finish(.failed(IOError("cancelled", ECANCELED))) }
        return
      }
      if res < 0 {
        finish(.failed(IOError("recvmsg", -res)))
        return
      }
      // Asked with MSG_TRUNC: a cut datagram reports its real length, and
      // the msghdr's flags say so.
      if Int(res) > URingEngine.datagramReceiveSize || up_msg_flags(message) & Int32(MSG_TRUNC) != 0 {
        deliver(LoopCompletion(token: token, value: .truncated(Int(res)), isFinal: false))
        if !cancelled { rearms.append(token) } else { finish(.failed(IOError("cancelled", ECANCELED))) }
        return
      }
      var length: UInt32 = 0
      let address = up_msg_address(message, &length)
      let sender = SocketAddress(raw: UnsafeRawBufferPointer(start: address, count: Int(length)))
      let bytes = Array(UnsafeRawBufferPointer(start: up_msg_data(message), count: Int(res)))
      deliver(LoopCompletion(token: token, value: .receivedFrom(bytes, sender), isFinal: false))
      if !cancelled {
        rearms.append(token)
      } else {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    case .receive(_, let buffer, let datagram):
      if res == -ENOBUFS && !cancelled {
        // Every provided buffer was in use: arm again (they are recycled
        // as soon as each completion is copied out).
        rearms.append(token)
        return
      }
      if res < 0 {
        finish(.failed(IOError("recv", -res)))
        return
      }
      if res == 0 && !datagram {
        finish(.received([]))
        return
      }
      if let buffer, Int(res) > buffer.count {
        // A datagram (asked with MSG_TRUNC) longer than the buffer reports
        // its real length: it was cut.
        deliver(LoopCompletion(token: token, value: .truncated(Int(res)), isFinal: false))
      } else {
        var bytes: [UInt8]
        if let buffer {
          bytes = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(res)]))
        } else {
          let bid = UInt16(truncatingIfNeeded: cqe.flags >> up_IORING_CQE_BUFFER_SHIFT)
          let base = up_bufring_buffer(bufferRing, bid)!
          bytes = Array(UnsafeRawBufferPointer(start: base, count: Int(res)))
          up_bufring_recycle(bufferRing, bid)
        }
        deliver(LoopCompletion(token: token, value: .received(bytes), isFinal: false))
        bytes = []
      }
      if !more && !cancelled {
        rearms.append(token)
      } else if !more {
        finish(.failed(IOError("cancelled", ECANCELED)))
      }
    }
  }
}
