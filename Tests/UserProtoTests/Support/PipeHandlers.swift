import UserProto

// Handlers the pipe tests use. None of them is `Sendable` or needs
// `@unchecked Sendable`: they live on their socket's loop.

/// Newline-framed messages: each line received is one message, each message
/// sent is written with a newline to the first writable pipe.
final class LineHandler: SocketHandler {
  var pipesSeen: [UInt64] = []

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end) ?? []
      input.moveReaderIndex(forwardBy: 1)
      try context.deliver(line)
    }
  }

  func pipeAdded(_ pipe: SocketPipe, context: SocketContext) { pipesSeen.append(pipe.id) }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    guard let pipe = context.pipes.first(where: { $0.isWritable }) else { return .wait }
    try pipe.write(message + [0x0a])
    return .taken
  }
}

/// Serves every pipe: each line received is answered on the same pipe with
/// "echo " and the line; the application sees nothing.
final class LineEchoHandler: SocketHandler {
  static var sendsMessages: Bool { false }
  var served: [UInt64: Int] = [:]

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end + 1) ?? []
      served[pipe.id, default: 0] += 1
      try pipe.write(Array("echo ".utf8) + line)
    }
  }
}

/// Broadcasts each message to every pipe; delivers what it receives.
final class FanOutHandler: SocketHandler {
  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    for pipe in context.pipes { try pipe.write(message) }
    return .taken
  }
}

/// Closes the pipe from inside `received` when a line starts with "CLOSE";
/// echoes other lines.
final class CloseOnCommandHandler: SocketHandler {
  static var sendsMessages: Bool { false }
  var closedFromReceive = 0

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    while let end = (0..<input.readableBytes).first(where: { input[$0] == 0x0a }) {
      let line = input.readBytes(end + 1) ?? []
      if line.starts(with: Array("CLOSE".utf8)) {
        closedFromReceive += 1
        pipe.close()
        return
      }
      try pipe.write(Array("echo ".utf8) + line)
    }
  }
}
