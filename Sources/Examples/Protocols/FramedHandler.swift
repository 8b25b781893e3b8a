public import UserProto

/// The tutorial's protocol (docs/tutorial.md): length-prefixed messages
/// over any number of pipes.
///
/// Each side of a pipe first writes a 4-byte hello, "UPF" and a version
/// byte; then every message is a 4-byte big-endian length followed by that
/// many bytes. A pipe whose peer sends a wrong hello, no hello within
/// ``helloTimeout``, a length above the socket's maximum message size, or
/// ends in the middle of a frame is failed; the socket and its other pipes
/// go on. Sends go round-robin to the pipes whose hello has arrived.
///
/// It is a plain class: every hook runs on the socket's loop, so its state
/// needs no lock and the type no `@unchecked Sendable`.
public final class FramedHandler: SocketHandler {
  /// What each side writes first: "UPF" and the protocol version.
  public static let hello: [UInt8] = [0x55, 0x50, 0x46, 0x01]

  /// How long a pipe may take to send its hello.
  public let helloTimeout: Duration

  /// The pipes the handler knows, by id.
  private var pipes: [UInt64: PipeState] = [:]
  /// Where the round-robin resumes.
  private var nextPipe = 0

  /// Frames delivered to the application, over all pipes.
  public private(set) var framesReceived = 0

  private struct PipeState {
    let pipe: SocketPipe
    var ready = false
    var helloTimer: HandlerTimer?
  }

  /// A handler that fails a pipe whose hello has not arrived within `helloTimeout`.
  public init(helloTimeout: Duration = .seconds(5)) {
    self.helloTimeout = helloTimeout
  }

  // MARK: Pipes come and go

  /// Writes the hello to the new pipe and starts its hello timer.
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) {
    // The hello goes first, ahead of any frame this handler writes later.
    try? pipe.write(FramedHandler.hello)
    let timer = try? context.startTimer(after: helloTimeout)
    pipes[pipe.id] = PipeState(pipe: pipe, helloTimer: timer)
  }

  /// Forgets the pipe and cancels its hello timer.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {
    pipes.removeValue(forKey: pipe.id)?.helloTimer?.cancel()
  }

  /// Fails, as a protocol violation, the pipe whose hello timer fired.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) {
    // The only timers are hello timers: fail the pipe that is still silent.
    guard let state = pipes.values.first(where: { $0.helloTimer === timer }) else { return }
    state.pipe.close(error: .protocolViolation("no hello within \(helloTimeout)"))
  }

  // MARK: Receiving

  /// Checks the hello, then delivers each whole frame; a wrong hello or an oversize length fails
  /// the pipe.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    guard var state = pipes[pipe.id] else { return }
    if !state.ready {
      guard input.readableBytes >= 4 else { return }  // a partial hello: wait for more
      for i in 0..<4 where input[i] != FramedHandler.hello[i] {
        throw .protocolViolation("bad hello byte \(input[i]) at offset \(i)")
      }
      input.moveReaderIndex(forwardBy: 4)
      state.ready = true
      state.helloTimer?.cancel()
      state.helloTimer = nil
      pipes[pipe.id] = state
      try context.resumeSends()  // sends that waited for a ready pipe
    }
    while let length = input.peekBigEndian(UInt32.self) {
      let size = Int(length)
      if size > context.options.maximumMessageSize {  // refuse before buffering it
        throw .messageTooLarge(size: size, limit: context.options.maximumMessageSize)
      }
      guard input.readableBytes >= 4 + size else { return }  // a partial frame
      input.moveReaderIndex(forwardBy: 4)
      try context.deliver(input.readBytes(size) ?? [])
      framesReceived += 1
    }
  }

  /// Closes the pipe, or fails it when the peer ended in the middle of the hello or a frame.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext)
    throws(SocketError)
  {
    // A frame (or the hello) cut short is an error, not a clean end.
    if !input.isEmpty {
      throw .protocolViolation("the peer closed mid-frame with \(input.readableBytes) bytes pending")
    }
    pipe.close()
  }

  // MARK: Sending

  /// Refuses a message longer than a 4-byte length can state.
  public static func validateSend(_ message: [UInt8]) throws(SocketError) {
    // Runs on the sender's thread and sees only the message.
    if message.count > Int(UInt32.max) {
      throw .messageTooLarge(size: message.count, limit: Int(UInt32.max))
    }
  }

  /// Frames the message and writes it to the next ready, writable pipe, round-robin; waits while there is none.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    let ready = context.pipes.filter { pipes[$0.id]?.ready == true && $0.isWritable }
    guard !ready.isEmpty else { return .wait }  // stays queued; the fd may stop being writable
    let pipe = ready[nextPipe % ready.count]
    nextPipe &+= 1
    try pipe.write(FramedHandler.frame(message))
    return .taken
  }

  /// The bytes of one frame: the length, then the message.
  public static func frame(_ message: [UInt8]) -> [UInt8] {
    let n = UInt32(message.count)
    var frame: [UInt8] = [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
    frame.reserveCapacity(4 + message.count)
    frame += message
    return frame
  }

  // MARK: The protocol's own API (through Socket.withHandler)

  /// How many pipes have completed the hello.
  public var readyPipes: Int { pipes.values.filter(\.ready).count }
}
