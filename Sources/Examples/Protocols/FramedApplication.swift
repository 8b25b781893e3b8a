import Glibc
public import UserProto

/// The application side of the tutorial's protocol (docs/tutorial.md): what
/// a program that holds a `Socket<FramedHandler>` writes.
public enum FramedApplication {
  /// A socket that listens on every one of `urls` (`tcp://:0` for an
  /// ephemeral port on every address, `inproc://NAME`, ...); returns it
  /// with the bound addresses, in order.
  public static func server(
    listening urls: [String], loop: EventLoop
  ) throws(SocketError) -> (Socket<FramedHandler>, [TransportURL]) {
    let socket = try Socket(FramedHandler(), loop: loop)
    var bound: [TransportURL] = []
    do {
      for url in urls { bound.append(try socket.listen(url)) }
    } catch {
      socket.abort()
      throw error
    }
    return (socket, bound)
  }

  /// A socket that keeps a pipe to each of `servers`: a lost pipe is
  /// re-dialed after a back-off from 50 ms doubling up to 2 s.
  public static func client(
    dialing servers: [TransportURL], loop: EventLoop
  ) throws(SocketError) -> Socket<FramedHandler> {
    let socket = try Socket(FramedHandler(), loop: loop)
    let policy = ReconnectPolicy(minimum: .milliseconds(50), maximum: .seconds(2))
    do {
      for url in servers { try socket.dial(url, reconnect: policy) }
    } catch {
      socket.abort()
      throw error
    }
    return socket
  }

  /// Which of the two descriptors poll(2) found readable.
  public struct Readable: Sendable, Hashable {
    /// poll(2) reported an event on the framed socket's fd: readable, or an error or hang-up.
    public var socket: Bool
    /// The kernel socket was readable.
    public var kernel: Bool
    /// A result from the two flags.
    public init(socket: Bool, kernel: Bool) {
      self.socket = socket
      self.kernel = kernel
    }
  }

  /// Waits up to `milliseconds` with poll(2) until the framed socket or
  /// `kernelFD` (a TCP socket, say) is readable, then takes every message
  /// the socket has queued, without blocking, into `received`.
  public static func pollOnce(
    _ socket: Socket<FramedHandler>, besides kernelFD: Int32, milliseconds: Int32,
    received: inout [[UInt8]]
  ) throws(SocketError) -> Readable {
    var set = [
      pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0),
      pollfd(fd: kernelFD, events: Int16(POLLIN), revents: 0),
    ]
    guard poll(&set, 2, milliseconds) > 0 else { return Readable(socket: false, kernel: false) }
    let ready = Readable(socket: set[0].revents != 0, kernel: set[1].revents & Int16(POLLIN) != 0)
    if ready.socket {
      // Readable means tryReceive will not block: drain what is queued.
      receiving: while true {
        switch try socket.tryReceive() {
        case .message(let message): received.append(message)
        case .wouldBlock, .endOfStream: break receiving
        }
      }
    }
    return ready
  }

  /// Sends `messages` with the async API (suspending while the send queue
  /// is full), then collects `count` received messages from `messages`.
  public static func exchange(
    _ socket: Socket<FramedHandler>, sending messages: [[UInt8]], collecting count: Int
  ) async throws -> [[UInt8]] {
    for message in messages { try await socket.send(message) }
    var received: [[UInt8]] = []
    guard count > 0 else { return received }
    for try await message in socket.messages {
      received.append(message)
      if received.count == count { break }
    }
    return received
  }

  /// How many pipes finished the hello: a protocol-specific question,
  /// asked on the loop.
  public static func readyPipes(_ socket: Socket<FramedHandler>) async throws -> Int {
    try await socket.withHandler { handler, _ in handler.readyPipes }
  }
}
