/// A protocol's logic: what a protocol author writes.
///
/// Every hook runs on the socket's event loop, one at a time, so a handler
/// keeps its state in ordinary stored properties: no locks, and no
/// `@unchecked Sendable`. The handler reaches its socket only through the
/// ``SocketContext`` each hook is given (deliver a message to the
/// application, write to a pipe, start a timer), and through the
/// ``SocketPipe`` values the hooks name. Both work only on the loop; called
/// anywhere else they throw ``SocketError/notOnLoop(_:)``.
///
/// A socket owns zero or more pipes (connections it dialed, connections its
/// listeners accepted, in-process peers); the handler sees them come and go
/// and decides where each message the application sends goes.
///
/// Every hook has a default, so a handler implements only what its protocol
/// needs. The defaults make a socket that delivers each received chunk as
/// one message and sends each message as is, to the first pipe that can
/// take it.
///
/// Handler instances are not `Sendable` (they never leave the loop); their
/// types are (`SendableMetatype`), so the socket can ask a handler type its
/// static properties from any thread.
public protocol SocketHandler: AnyObject, SendableMetatype {
  /// Whether the application may send on this socket (false for a
  /// subscriber, say): sends then throw ``SocketError/notSupported(_:)``.
  /// The default is true.
  static var sendsMessages: Bool { get }

  /// Whether an application send abandons what was received before it (a
  /// request/reply requester: the reply to an old request must not be
  /// received after a new request was sent). When true, each accepted send
  /// drops the messages still queued for the application, and messages the
  /// handler delivers before it has seen every accepted send are dropped
  /// (counted in ``SocketStatistics/staleDrops``). The default is false.
  static var sendCancelsReceive: Bool { get }

  /// Checks a message on the sending thread before it is queued; throw to
  /// refuse the send (nothing is queued). It is static: it sees only the
  /// message, never the handler's loop-confined state. The default accepts
  /// every message.
  static func validateSend(_ message: [UInt8]) throws(SocketError)

  /// A pipe is up (connected, accepted, or an in-process peer). Write a
  /// handshake here.
  func pipeAdded(_ pipe: SocketPipe, context: SocketContext)

  /// Bytes arrived on `pipe` (or, on a datagram pipe, one datagram). Parse
  /// them in place and consume what was used; what is left stays for the
  /// next call (on a datagram pipe it is dropped). Throw to fail that pipe
  /// only. The default delivers everything as one message.
  func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError)

  /// The peer of `pipe` finished sending (end of stream). Throw (a frame
  /// cut short, say) to fail the pipe instead. The default closes the pipe.
  func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError)

  /// `pipe` is gone: closed, failed (`error`), or closed with the socket.
  /// A dialed pipe is then re-dialed after the reconnect back-off.
  func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext)

  /// The application sent `message`: route it (write it to one pipe, to
  /// several, or drop it by the protocol's rules) and return
  /// ``SendDisposition/taken``, or return ``SendDisposition/wait`` when no
  /// pipe can take it now: it stays first in the socket's send queue and is
  /// offered again when a pipe is added, a pipe becomes writable, or the
  /// handler calls ``SocketContext/resumeSends()``. Throwing fails the whole
  /// socket. The default writes it to the first writable pipe.
  func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition

  /// `pipe`'s output drained below its low watermark after having reached
  /// its high watermark. Queued sends are offered again after this hook.
  func pipeWritable(_ pipe: SocketPipe, context: SocketContext)

  /// A timer from ``SocketContext/startTimer(after:)`` fired.
  func timerFired(_ timer: HandlerTimer, context: SocketContext)

  /// The application closed the socket: its pipes close after this.
  func socketClosing(context: SocketContext)
}

/// What a handler did with a message the application sent.
public enum SendDisposition: Sendable, Hashable {
  /// The handler took it (written, or dropped by the protocol's rules).
  case taken
  /// No pipe can take it now: keep it queued, offer it again later.
  case wait
}

extension SocketHandler {
  /// The default: true, the application may send.
  public static var sendsMessages: Bool { true }
  /// The default: false, a send keeps what was received.
  public static var sendCancelsReceive: Bool { false }
  /// The default: accepts every message.
  public static func validateSend(_ message: [UInt8]) throws(SocketError) {}

  /// The default: does nothing.
  public func pipeAdded(_ pipe: SocketPipe, context: SocketContext) {}

  /// The default: delivers all the bytes received so far as one message.
  public func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext)
    throws(SocketError)
  {
    try context.deliver(input.readAll())
  }

  /// The default: closes the pipe, whatever input is left.
  public func pipeReachedEnd(_ pipe: SocketPipe, input: InboundBuffer, context: SocketContext) throws(SocketError) {
    pipe.close()
  }

  /// The default: does nothing.
  public func pipeRemoved(_ pipe: SocketPipe, error: SocketError?, context: SocketContext) {}

  /// The default: writes the message to the first writable pipe; ``SendDisposition/wait`` when none is.
  public func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
    guard let pipe = context.pipes.first(where: { $0.isWritable }) else { return .wait }
    try pipe.write(message)
    return .taken
  }

  /// The default: does nothing.
  public func pipeWritable(_ pipe: SocketPipe, context: SocketContext) {}
  /// The default: does nothing.
  public func timerFired(_ timer: HandlerTimer, context: SocketContext) {}
  /// The default: does nothing.
  public func socketClosing(context: SocketContext) {}
}
