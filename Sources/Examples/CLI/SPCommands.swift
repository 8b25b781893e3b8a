import ArgumentParser
import ExampleProtocols
import Glibc
import UserProto

/// `userproto echo-server --listen tcp://127.0.0.1:5555`
struct EchoServerCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "echo-server", abstract: "Serve SP REP (rep0): reply to each request with its body.")

  @Option(help: "Address to listen on, e.g. tcp://127.0.0.1:5555.")
  var listen: String = "tcp://127.0.0.1:5555"
  @Option(help: "Stop after this many seconds (0: run until killed).")
  var seconds: Int = 0

  func run() throws {
    let loop = try EventLoop()
    let server = try EchoServer(on: try SPAddress.parse(listen), loop: loop)
    print("echo server on tcp://\(server.localAddress) (loop: \(loop.backend))")
    fflush(nil)
    let deadline = EventLoop.now() + UInt64(seconds) * 1_000_000_000
    while seconds == 0 || EventLoop.now() < deadline { usleep(100_000) }
    print("served \(server.requestsServed) requests")
    server.close()
    loop.shutdownAndWait()
  }
}

/// `userproto echo-client --dial tcp://127.0.0.1:5555 --data hello`
struct EchoClientCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "echo-client", abstract: "Send SP REQ (req0) requests and print the replies.")

  @Option(help: "Address to dial.") var dial: String = "tcp://127.0.0.1:5555"
  @Option(help: "Request body.") var data: String = "hello"
  @Option(help: "Number of requests.") var count: Int = 1
  @Option(help: "Resend a request after this many milliseconds without a reply.") var resendMs: Int = 60_000
  @Option(help: "Give up after this many seconds.") var timeout: Int = 10

  func run() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socket = try ReqSocket.connect(to: try SPAddress.parse(dial), loop: loop)
    socket.resendInterval = .milliseconds(resendMs)
    defer { socket.abort() }
    let deadline = EventLoop.now() + UInt64(timeout) * 1_000_000_000
    for _ in 0..<count {
      guard try socket.trySend(Array(data.utf8)) else { throw ValidationError("send would block") }
      var reply: [UInt8]?
      while reply == nil {
        guard EventLoop.now() < deadline else { throw ValidationError("timed out waiting for a reply") }
        var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, 100)
        switch try socket.tryReceive() {
        case .message(let m): reply = m
        case .endOfStream: throw ValidationError("the server closed the connection")
        case .wouldBlock: break
        }
      }
      print(String(decoding: reply!, as: UTF8.self))
    }
  }
}

/// `userproto pub --listen tcp://127.0.0.1:5556 --data "news: hi" --count 10`
struct PubCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pub", abstract: "Publish SP PUB (pub0) messages to every subscriber.")

  @Option(help: "Address to listen on.") var listen: String = "tcp://127.0.0.1:5556"
  @Option(help: "Message to publish (repeatable; published in turn).") var data: [String] = ["news: hello"]
  @Option(help: "Messages to publish (0: forever).") var count: Int = 0
  @Option(help: "Milliseconds between messages.") var intervalMs: Int = 100

  func run() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let publisher = try Publisher(on: try SPAddress.parse(listen), loop: loop)
    defer { publisher.close() }
    print("publishing on tcp://\(publisher.localAddress)")
    fflush(nil)
    var i = 0
    while count == 0 || i < count {
      _ = publisher.publish(data[i % data.count])
      i += 1
      usleep(useconds_t(intervalMs * 1000))
    }
    let s = publisher.statistics
    print("published \(s.published), delivered \(s.delivered) copies, dropped \(s.dropped)")
  }
}

/// `userproto sub --dial tcp://127.0.0.1:5556 --subscribe news --count 3`
struct SubCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sub", abstract: "Subscribe with SP SUB (sub0) and print matching messages.")

  @Option(help: "Address to dial.") var dial: String = "tcp://127.0.0.1:5556"
  @Option(help: "Topic prefix (repeatable; none: everything).") var subscribe: [String] = []
  @Option(help: "Stop after this many messages.") var count: Int = 1
  @Option(help: "Give up after this many seconds.") var timeout: Int = 10

  func run() throws {
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socket = try SubSocket.connect(to: try SPAddress.parse(dial), loop: loop)
    defer { socket.abort() }
    if subscribe.isEmpty { socket.subscribe("") }
    for topic in subscribe { socket.subscribe(topic) }
    let deadline = EventLoop.now() + UInt64(timeout) * 1_000_000_000
    var received = 0
    while received < count {
      guard EventLoop.now() < deadline else { throw ValidationError("timed out after \(received) messages") }
      var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
      _ = poll(&entry, 1, 100)
      switch try socket.tryReceive() {
      case .message(let m):
        print(String(decoding: m, as: UTF8.self))
        fflush(nil)
        received += 1
      case .endOfStream: throw ValidationError("the publisher closed the connection")
      case .wouldBlock: break
      }
    }
  }
}
