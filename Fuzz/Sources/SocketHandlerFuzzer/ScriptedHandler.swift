import UserProto

/// A protocol made for this target, to reach the parts of the socket the
/// SP handlers do not: it keeps the defaults (each chunk a peer writes is
/// one message; each send goes to the first writable pipe), except that a
/// chunk starting with a control byte makes it use the rest of its
/// context, and a send starting with one makes it wait or refuse.
///
/// - `F0`: fail the whole socket (``SocketContext/fail(_:)``)
/// - `F1`: end the application's message stream (``SocketContext/finishReceiving()``)
/// - `F2`: drop the messages queued for the application
/// - `F3`: offer the waiting sends again (``SocketContext/resumeSends()``)
/// - `F4`: fail that pipe (throw from ``received(_:from:context:)``)
/// - `F5`: close that pipe
/// - a send starting with `EE` waits once before it is taken; one with
///   `EF` throws, which fails the socket.
final class ScriptedHandler: SocketHandler {
  private var waited = false

  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
    let bytes = input.readAll()
    switch bytes.first {
    case 0xF0: try context.fail(.protocolViolation("the peer asked the socket to fail"))
    case 0xF1: try context.finishReceiving()
    case 0xF2: try context.discardReceivedMessages()
    case 0xF3: try context.resumeSends()
    case 0xF4: throw .protocolViolation("the peer asked its pipe to fail")
    case 0xF5: pipe.close()
    default: try context.deliver(bytes)
    }
  }

  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    if message.first == 0xEF { throw .protocolViolation("a send this protocol refuses") }
    if message.first == 0xEE && !waited {
      waited = true
      return .wait
    }
    guard let pipe = context.pipes.first(where: { $0.isWritable }) else { return .wait }
    try pipe.write(message)
    waited = false
    return .taken
  }
}
