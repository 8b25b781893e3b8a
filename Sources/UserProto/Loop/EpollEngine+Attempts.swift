import CUserProtoShim
import Glibc

// Attempts: the non-blocking system calls that give epoll the completions
// io_uring would deliver, made when an fd is ready or an operation is new.
extension EpollEngine {
  /// Runs every operation of `entry` that readiness allows, until EAGAIN.
  /// A stream read shorter than the buffer means the socket was drained
  /// (edge-triggered: new data brings a new event), which saves the read
  /// that would return EAGAIN; with `drain` (the peer is closing, or the
  /// state is unknown) reading goes on until EAGAIN or end-of-stream.
  func attempt(
    _ entry: Entry, readable: Bool, writable: Bool, drain: Bool, _ deliver: (LoopCompletion) -> Void
  ) {
    let fd = entry.fd
    // Output first: bytes queued before a failure (a protocol header)
    // still leave, as they would with io_uring's in-order submission.
    if writable || entry.connect?.started == false, let pending = entry.connect {
      if !pending.started {
        entry.connect?.started = true
        do throws(IOError) {
          // False: in progress; writability brings its end.
          if try Sys.connect(fd, to: pending.address) {
            entry.connect = nil
            deliver(LoopCompletion(token: pending.token, value: .connected, isFinal: true))
          }
        } catch {
          entry.connect = nil
          deliver(LoopCompletion(token: pending.token, value: .failed(error), isFinal: true))
        }
      } else if writable {
        entry.connect = nil
        let value: CompletionValue
        do throws(IOError) {
          let code = try Sys.pendingError(fd)
          value = code == 0 ? .connected : .failed(IOError("connect", code))
        } catch {
          value = .failed(error)
        }
        deliver(LoopCompletion(token: pending.token, value: value, isFinal: true))
      }
    }
    if writable {
      while let first = entry.sends.first {
        let value: CompletionValue
        do throws(IOError) {
          // nil: the socket's buffer is full; writability brings the rest.
          guard let n = try Sys.send(fd, first.bytes, to: first.address) else { break }
          value = .sent(n)
        } catch {
          value = .failed(error)
        }
        entry.sends.removeFirst()
        deliver(LoopCompletion(token: first.token, value: value, isFinal: true))
      }
    }
    if readable, let token = entry.acceptToken {
      while entry.acceptToken == token {
        do throws(IOError) {
          // nil: no connection pending.
          guard let client = try Sys.accept(fd) else { break }
          deliver(LoopCompletion(token: token, value: .accepted(client), isFinal: false))
        } catch {
          entry.acceptToken = nil
          deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
        }
      }
    }
    if readable, let token = entry.receiveToken, entry.withAddress {
      receiveDatagrams(entry, token, deliver)
    } else if readable, let token = entry.receiveToken {
      // A datagram is asked with MSG_TRUNC, so one longer than the buffer
      // reports its real length (on a stream MSG_TRUNC would discard data).
      let flags = entry.datagram ? Int32(MSG_TRUNC) : 0
      while entry.receiveToken == token {
        let received: Int?
        do throws(IOError) {
          received = try Sys.receive(fd, into: &receiveBuffer, flags: flags)
        } catch {
          entry.receiveToken = nil
          deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
          break
        }
        // nil: nothing pending; readability brings more.
        guard let n = received else { break }
        if entry.datagram && n > receiveBuffer.count {
          deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
          continue
        }
        if n > 0 || entry.datagram {
          deliver(LoopCompletion(token: token, value: .received(Array(receiveBuffer[0..<n])), isFinal: false))
          if !drain && !entry.datagram && n < receiveBuffer.count { break }
          continue
        }
        // End of stream.
        entry.receiveToken = nil
        deliver(LoopCompletion(token: token, value: .received([]), isFinal: true))
      }
    }
    retireIfIdle(entry)
  }

  /// Datagrams with their senders (an unconnected UDP socket), until EAGAIN.
  private func receiveDatagrams(_ entry: Entry, _ token: UInt64, _ deliver: (LoopCompletion) -> Void) {
    while entry.receiveToken == token {
      let received: (length: Int, sender: SocketAddress)?
      do throws(IOError) {
        received = try Sys.receiveDatagram(entry.fd, into: &receiveBuffer)
      } catch {
        entry.receiveToken = nil
        deliver(LoopCompletion(token: token, value: .failed(error), isFinal: true))
        return
      }
      // nil: nothing pending; readability brings more.
      guard let datagram = received else { return }
      let n = datagram.length
      if n > receiveBuffer.count {
        // MSG_TRUNC: a datagram longer than the buffer reports its real length.
        deliver(LoopCompletion(token: token, value: .truncated(n), isFinal: false))
        continue
      }
      deliver(
        LoopCompletion(token: token, value: .receivedFrom(Array(receiveBuffer[0..<n]), datagram.sender), isFinal: false)
      )
    }
  }
}
