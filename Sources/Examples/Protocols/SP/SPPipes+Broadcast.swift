public import UserProto

extension SPPipes {
  /// Writes `message` to every ready pipe (those whose handshake completed),
  /// framed once per framing: the pipes of one framing share the frame. A
  /// pipe whose output is not writable is skipped and handed to `stalled`
  /// (the protocol counts that drop); one whose write fails (it is going)
  /// is skipped and counted in the result. Used by the fan-out protocols
  /// (PUB, SURVEYOR, BUS), which never wait for a pipe. A raw BUS passes
  /// the pipe a message came from as `excluded`: it gets no copy.
  /// - Returns: the copies written, and the writes that failed.
  @discardableResult
  public func broadcast(
    _ message: [UInt8], excluding excluded: SocketPipe? = nil, stalled: (SocketPipe) -> Void
  ) -> (written: Int, failed: Int) {
    var frames: [SPFraming: [UInt8]] = [:]
    var written = 0
    var failed = 0
    for pipe in ready where pipe !== excluded {
      guard pipe.isWritable else {
        stalled(pipe)
        continue
      }
      let pipeFraming = self.framing(of: pipe)
      let frame: [UInt8]
      if let made = frames[pipeFraming] {
        frame = made
      } else {
        frame = pipeFraming.frame(message)
        frames[pipeFraming] = frame
      }
      do throws(SocketError) {
        try pipe.write(frame)
        written += 1
      } catch {
        failed += 1
      }
    }
    return (written, failed)
  }
}
