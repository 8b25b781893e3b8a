// EchoServers: the TCP echo servers EchoBench measures, one per process so
// that each server's CPU time can be read from /proc on its own.
//
//   EchoServers loop-raw    --backend io_uring|epoll   raw loop ops: accept, receive, send
//   EchoServers loop-socket --backend io_uring|epoll   ProtocolSocket + handleMessagesOnLoop
//   EchoServers nio                                    SwiftNIO, 1 event loop thread
//
// Each listens on 127.0.0.1 (an ephemeral port unless --port is given),
// prints "PORT n" on standard output once listening, and serves until killed.
import BenchSupport
import Glibc
import NIOCore
import NIOPosix
import UserProto

let arguments = BenchArguments()
let kind = arguments.arguments.dropFirst().first ?? ""
let port = UInt16(arguments.int("--port", default: 0))

func loopBackend() -> UserProto.EventLoop.BackendChoice {
  switch arguments.string("--backend") ?? "io_uring" {
  case "epoll": return .epoll
  default: return .ioUring
  }
}

func announce(_ port: Int) {
  print("PORT \(port)")
  flushOutput()
}

func serveForever() -> Never {
  while true { pause() }
}

func makeLoop() throws -> UserProto.EventLoop {
  let loop = try UserProto.EventLoop(configuration: .init(backend: loopBackend(), name: "echo-loop"))
  logLine("EchoServers \(kind): backend \(loop.backend) (\(loop.capabilities.joined(separator: "; ")))")
  return loop
}

// MARK: Raw loop operations

/// One echoed connection on the raw loop API: a multishot receive, and one
/// send in flight at a time with the rest queued. Loop-confined.
final class RawEchoConnection: @unchecked Sendable {
  let loop: UserProto.EventLoop
  let fd: Int32
  private var receiveHandle: IOHandle?
  private var sendHandle: IOHandle?
  private var queue: [[UInt8]] = []
  private var closed = false
  var onClose: (() -> Void)?

  init(loop: UserProto.EventLoop, fd: Int32) {
    self.loop = loop
    self.fd = fd
  }

  func start() throws {
    receiveHandle = try loop.receive(socket: fd) { [self] result in
      switch result {
      case .success(let bytes) where bytes.isEmpty:
        receiveHandle = nil
        close()
      case .success(let bytes):
        queue.append(bytes)
        pump()
      case .failure:
        receiveHandle = nil
        close()
      }
    }
  }

  private func pump() {
    guard !closed, sendHandle == nil, let first = queue.first else { return }
    do {
      sendHandle = try loop.send(socket: fd, first) { [self] result in
        sendHandle = nil
        switch result {
        case .success(let n):
          if n >= queue[0].count { queue.removeFirst() } else { queue[0].removeFirst(n) }
          pump()
        case .failure:
          close()
        }
      }
    } catch {
      close()
    }
  }

  private func close() {
    guard !closed else { return }
    closed = true
    if let receiveHandle { loop.cancel(receiveHandle) }
    if let sendHandle { loop.cancel(sendHandle) }
    receiveHandle = nil
    sendHandle = nil
    queue = []
    Glibc.close(fd)
    onClose?()
    onClose = nil
  }
}

func runLoopRaw() throws -> Never {
  let loop = try makeLoop()
  let (listener, boundPort) = Loopback.listen(port: port, nonBlocking: true)
  let connections = LoopBox([Int32: RawEchoConnection]())
  try loop.execute {
    do {
      _ = try loop.accept(listener: listener) { result in
        guard case .success(let fd) = result else { return }
        Loopback.setNoDelay(fd)
        let connection = RawEchoConnection(loop: loop, fd: fd)
        connections.value[fd] = connection
        connection.onClose = { connections.value[fd] = nil }
        do { try connection.start() } catch { Glibc.close(fd) }
      }
    } catch {
      logLine("accept failed: \(error)")
      exit(1)
    }
  }
  announce(Int(boundPort))
  serveForever()
}

// MARK: ProtocolSocket

/// The trivial protocol: every received chunk is one message (the default
/// `received(_:)`), sent back as is (the default `encode(_:)`).
final class RawChunkSocket: ProtocolSocket, @unchecked Sendable {}

func runLoopSocket() throws -> Never {
  let loop = try makeLoop()
  let connections = LoopBox([ObjectIdentifier: RawChunkSocket]())
  let address = try SocketAddress(ipv4: "127.0.0.1", port: port)
  let listener = try ProtocolListener<RawChunkSocket>(on: address, loop: loop, queuesConnections: false) { socket in
    // Runs on the loop: the listener does not keep sockets it does not
    // queue, so the server does.
    connections.value[ObjectIdentifier(socket)] = socket
    socket.handleMessagesOnLoop { socket, bytes in
      _ = try? socket.trySend(bytes)
    }
    socket.observeStateChanges { state in
      switch state {
      case .closed, .failed, .peerFinishedSending:
        connections.value[ObjectIdentifier(socket)] = nil
        socket.abort()
      default: break
      }
    }
  }
  logLine("EchoServers loop-socket: mask fd \(listener.mask.layout)")
  announce(Int(listener.localAddress.port ?? 0))
  withExtendedLifetime(listener) { serveForever() }
}

// MARK: SwiftNIO

private final class EchoHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    context.write(data, promise: nil)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    context.flush()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

func runNIO() throws -> Never {
  let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
  let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(EchoHandler())
      }
    }
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelOption(.maxMessagesPerRead, value: 16)
    .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
  let channel = try bootstrap.bind(host: "127.0.0.1", port: Int(port)).wait()
  logLine("EchoServers nio: SwiftNIO MultiThreadedEventLoopGroup(numberOfThreads: 1)")
  announce(channel.localAddress?.port ?? 0)
  serveForever()
}

exitWhenInputCloses()
do {
  switch kind {
  case "loop-raw": try runLoopRaw()
  case "loop-socket": try runLoopSocket()
  case "nio": try runNIO()
  default:
    logLine("usage: EchoServers loop-raw|loop-socket|nio [--backend io_uring|epoll] [--port N]")
    exit(2)
  }
} catch {
  logLine("EchoServers \(kind): \(error)")
  exit(1)
}
