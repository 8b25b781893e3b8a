// userproto-check: process-isolated checks the UserProto tests run.
//
//   userproto-check seccomp EPERM|ENOSYS   deny io_uring with seccomp, start a loop, echo a byte
//   userproto-check leak io_uring|epoll N   start and shut down N loops with work in flight,
//                                           counting /proc/self/fd before and after
//   userproto-check setup-leak N            N rounds of io_uring set-ups failing at each step
//                                           (setup, ring enable, opcode probe), forced and
//                                           automatic, counting /proc/self/fd before and after
//   userproto-check pipes-leak io_uring|epoll N   N rounds of Socket<Handler> pairs over tcp, ipc, udp
//                                           and inproc pipes, closed, aborted or dropped
//   userproto-check syscall-fault-leak io_uring|epoll N   N rounds of socket calls failing by injection
//                                           (listen, accept, dial, send, receive), counting
//                                           /proc/self/fd and double closes (badCloses)
import CUserProtoTestShim
import Dispatch
import Glibc
@_spi(Testing) import UserProto

func openDescriptorCount() -> Int {
  guard let dir = opendir("/proc/self/fd") else { return -1 }
  defer { closedir(dir) }
  var count = 0
  while readdir(dir) != nil { count += 1 }
  return count - 3  // ".", ".." and the directory stream itself
}

func fail(_ message: String) -> Never {
  print("error=\(String(message.map { $0 == " " ? "_" : $0 }))")
  exit(1)
}

/// Echoes one byte through a socketpair with the loop's receive and send.
func echoOnce(_ loop: EventLoop) -> Bool {
  var fds: [Int32] = [-1, -1]
  guard
    socketpair(
      AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0
  else { return false }
  defer {
    close(fds[0])
    close(fds[1])
  }
  let done = DispatchSemaphore(value: 0)
  let a = fds[0]
  try? loop.execute {
    _ = try? loop.receive(socket: a) { result in
      if case .success(let bytes) = result, bytes == [0x2a] {
        _ = try? loop.send(socket: a, [0x2b]) { _ in done.signal() }
      }
    }
  }
  var byte: UInt8 = 0x2a
  _ = write(fds[1], &byte, 1)
  guard done.wait(timeout: .now() + 5) == .success else { return false }
  var reply: UInt8 = 0
  var entry = pollfd(fd: fds[1], events: Int16(POLLIN), revents: 0)
  _ = poll(&entry, 1, 5000)
  return read(fds[1], &reply, 1) == 1 && reply == 0x2b
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else { fail("usage") }
switch arguments[1] {
case "seccomp":
  unsetenv("USERPROTO_LOOP_BACKEND")  // this check is about the automatic choice
  let code = arguments[2] == "ENOSYS" ? ENOSYS : EPERM
  let rc = up_seccomp_deny_io_uring(code)
  if rc != 0 { fail("seccomp \(rc)") }
  do {
    let loop = try EventLoop()
    let ok = echoOnce(loop)
    print("backend=\(loop.backend)")
    print("reason=\(String(loop.backendReason.map { $0 == " " ? "_" : $0 }))")
    print("echo=\(ok ? "ok" : "failed")")
    loop.shutdownAndWait()
  } catch {
    fail("\(error)")
  }
case "leak":
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice: EventLoop.BackendChoice = arguments[2] == "epoll" ? .epoll : .ioUring
  let before = openDescriptorCount()
  for _ in 0..<n {
    do {
      let loop = try EventLoop(configuration: .init(backend: choice))
      var fds: [Int32] = [-1, -1]
      _ = socketpair(
        AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
      let a = fds[0]
      let done = DispatchSemaphore(value: 0)
      try loop.execute {
        _ = try? loop.receive(socket: a) { _ in }
        _ = try? loop.watch(fd: a, events: [.readable]) { _ in }
        done.signal()
      }
      done.wait()
      try loop.schedule(after: .seconds(30)) {}
      loop.shutdownAndWait()
      close(fds[0])
      close(fds[1])
    } catch {
      fail("\(error)")
    }
  }
  print("before=\(before) after=\(openDescriptorCount())")
case "socket-leak":
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice: EventLoop.BackendChoice = arguments[2] == "epoll" ? .epoll : .ioUring
  do {
    let loop = try EventLoop(configuration: .init(backend: choice))
    let listener = try ProtocolListener<ProtocolSocket>(on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    let before = openDescriptorCount()
    for i in 0..<n {
      let client = try ProtocolSocket.connect(to: listener.localAddress, loop: loop)
      var server: ProtocolSocket?
      while server == nil { server = try listener.tryAccept() }
      _ = try client.trySend([UInt8(i & 0xff)])
      // Graceful close on both sides; every tenth time an abort, and every
      // tenth time (offset by five) the sockets are simply dropped.
      if i % 10 == 0 {
        client.abort()
        server?.abort()
      } else if i % 10 == 5 {
        server = nil
      } else {
        try client.close()
        try server?.close()
      }
    }
    // Graceful closes finish asynchronously: wait for the fds to go.
    let deadline = EventLoop.now() + 30_000_000_000
    while openDescriptorCount() > before && EventLoop.now() < deadline { usleep(10_000) }
    print("before=\(before) after=\(openDescriptorCount())")
    try listener.close()
    loop.shutdownAndWait()
  } catch {
    fail("\(error)")
  }
case "pipes-leak":
  // n rounds of a server Socket listening on tcp, ipc, udp and inproc and a
  // client dialing all four; one message answered over each pipe; then
  // both closed (gracefully, aborted or dropped in turn).
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice: EventLoop.BackendChoice = arguments[2] == "epoll" ? .epoll : .ioUring
  final class Echo: SocketHandler {
    static var sendsMessages: Bool { false }
    func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
      try pipe.write(input.readAll())
    }
  }
  final class Spray: SocketHandler {
    func send(_ message: [UInt8], context: SocketContext) throws(SocketError) -> SendDisposition {
      guard context.pipes.count == 4 else { return .wait }
      for pipe in context.pipes { try pipe.write(message) }
      return .taken
    }
  }
  do {
    let loop = try EventLoop(configuration: .init(backend: choice))
    let before = openDescriptorCount()
    for i in 0..<n {
      let server = try Socket(Echo(), loop: loop)
      var client: Socket<Spray>? = try Socket(Spray(), loop: loop)
      _ = server.fileDescriptor
      _ = client?.fileDescriptor
      let urls = [
        try server.listen("tcp://127.0.0.1:0"), try server.listen("ipc:///tmp/userproto-check-\(getpid())-\(i)"),
        try server.listen("udp://127.0.0.1:0"), try server.listen("inproc://check-\(getpid())-\(i)"),
      ]
      for url in urls { try client?.dial(url) }
      _ = try client?.trySend([UInt8(i & 0xff)])
      var answers = 0
      let deadline = EventLoop.now() + 10_000_000_000
      while answers < 4 {
        if case .message = try client?.tryReceive() { answers += 1 } else { usleep(200) }
        if EventLoop.now() > deadline { fail("round \(i): \(answers) of 4 answers") }
      }
      switch i % 3 {
      case 0:
        try client?.close()
        try server.close()
      case 1:
        client?.abort()
        server.abort()
      default:
        client = nil
      }
      _ = client
    }
    let deadline = EventLoop.now() + 30_000_000_000
    while openDescriptorCount() > before && EventLoop.now() < deadline { usleep(10_000) }
    print("before=\(before) after=\(openDescriptorCount())")
    loop.shutdownAndWait()
  } catch {
    fail("\(error)")
  }
case "udp-leak":
  // A UDP listener and n peers, each making a socket, answered, then closed
  // (gracefully, aborted or dropped in turn); then the listener closes while
  // its last peer's socket is still open, which keeps the UDP socket until
  // that one closes too.
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice: EventLoop.BackendChoice = arguments[2] == "epoll" ? .epoll : .ioUring
  do {
    let loop = try EventLoop(configuration: .init(backend: choice))
    let before = openDescriptorCount()
    let listener = try ProtocolListener<ProtocolSocket>.udp(
      on: try SocketAddress(ipv4: "127.0.0.1", port: 0), loop: loop)
    var last: ProtocolSocket?
    for i in 0..<n {
      let client = try ProtocolSocket.udp(
        local: try SocketAddress(ipv4: "127.0.0.1", port: 0), remote: listener.localAddress, loop: loop)
      _ = try client.trySend([UInt8(i & 0xff)])
      var server: ProtocolSocket?
      let deadline = EventLoop.now() + 10_000_000_000
      while server == nil {
        server = try listener.tryAccept()
        if EventLoop.now() > deadline { fail("no peer socket for datagram \(i)") }
      }
      _ = try server?.trySend([UInt8(i & 0xff)])
      while true {
        if case .message = try client.tryReceive() { break }
        if EventLoop.now() > deadline { fail("no answer to datagram \(i)") }
      }
      if i == n - 1 {
        last = server
        client.abort()
      } else if i % 10 == 0 {
        client.abort()
        server?.abort()
      } else if i % 10 == 5 {
        client.abort()
        server = nil
      } else {
        try client.close()
        try server?.close()
      }
    }
    try listener.close()
    let open = openDescriptorCount()
    last?.abort()
    last = nil
    let deadline = EventLoop.now() + 30_000_000_000
    while openDescriptorCount() > before && EventLoop.now() < deadline { usleep(10_000) }
    print("before=\(before) listenerClosed=\(open) after=\(openDescriptorCount())")
    loop.shutdownAndWait()
  } catch {
    fail("\(error)")
  }
case "setup-leak":
  guard arguments.count == 3, let n = Int(arguments[2]) else { fail("usage") }
  let scenarios: [(name: String, call: LoopFaults.Call, code: Int32)] = [
    ("setup", .uringSetup, ENOMEM), ("enable", .uringEnable, EPERM),
    ("probe", .uringProbe(opcode: "RECV"), EOPNOTSUPP),
  ]
  func makeLoop(_ backend: EventLoop.BackendChoice, failing fault: (call: LoopFaults.Call, code: Int32))
    throws -> EventLoop
  {
    var configuration = EventLoop.Configuration(backend: backend)
    configuration.honorsEnvironment = false
    configuration.faults = LoopFaults()
    configuration.faults?.inject(fault.call, fault.code)
    return try EventLoop(configuration: configuration)
  }
  // A first loop of each kind outside the count: one-time allocations
  // (thread stacks, the runtime's own fds) are not leaks.
  if let warm = try? EventLoop(configuration: .init(backend: .epoll)) { warm.shutdownAndWait() }
  if let warm = try? EventLoop(configuration: .init(backend: .ioUring)) { warm.shutdownAndWait() }
  let before = openDescriptorCount()
  var thrown = 0
  var fellBack = 0
  for _ in 0..<n {
    for scenario in scenarios {
      // Forced io_uring: the failure is thrown, and nothing stays open.
      do {
        let loop = try makeLoop(.ioUring, failing: (scenario.call, scenario.code))
        loop.shutdownAndWait()
        // A kernel whose rings are not created disabled never enables one.
        if scenario.name != "enable" { fail("\(scenario.name): forced io_uring did not throw") }
      } catch {
        thrown += 1
      }
      // Automatic: epoll takes over and works; shutting it down frees all.
      do {
        let loop = try makeLoop(.automatic, failing: (scenario.call, scenario.code))
        if loop.backend == .epoll { fellBack += 1 }
        if !echoOnce(loop) { fail("\(scenario.name): the loop does no I/O") }
        loop.shutdownAndWait()
      } catch {
        fail("\(scenario.name): automatic did not fall back: \(error)")
      }
    }
  }
  print("before=\(before) after=\(openDescriptorCount()) thrown=\(thrown) fellBack=\(fellBack)")
case "syscall-fault-leak":
  // n rounds on a loop whose table fails single calls: listens failing at
  // socket, setsockopt, bind and listen; an accept failing; a dial failing
  // at socket, setsockopt and connect before one connects; a pipe whose send
  // fails, then one whose receive fails, each re-dialed. Every failure must
  // close what it opened, and nothing may be closed twice.
  guard arguments.count == 4, let n = Int(arguments[3]) else { fail("usage") }
  let choice: EventLoop.BackendChoice = arguments[2] == "epoll" ? .epoll : .ioUring
  final class FaultEcho: SocketHandler {
    static var sendsMessages: Bool { false }
    func received(_ input: inout InboundBuffer, from pipe: SocketPipe, context: SocketContext) throws(SocketError) {
      let bytes = input.readAll()
      if bytes.contains(0xFF) {
        pipe.close()
        return
      }
      try pipe.write(bytes)
    }
  }
  final class FaultClient: SocketHandler {}
  func waitFor(_ what: String, _ condition: () -> Bool) {
    let deadline = EventLoop.now() + 10_000_000_000
    while !condition() {
      if EventLoop.now() > deadline { fail("timed out waiting for \(what)") }
      usleep(1000)
    }
  }
  do {
    let faults = LoopFaults()
    var configuration = EventLoop.Configuration(backend: choice)
    configuration.honorsEnvironment = false
    configuration.faults = faults
    let loop = try EventLoop(configuration: configuration)
    let peers = try EventLoop(configuration: .init(backend: choice))
    let server = try Socket(FaultEcho(), loop: peers)
    let bound = try server.listen("tcp://127.0.0.1:0")
    let before = openDescriptorCount()
    let badBefore = LoopFaults.badCloses
    let redial = ReconnectPolicy(minimum: .milliseconds(5), jitter: 0)
    for i in 0..<n {
      let listener = try Socket(FaultEcho(), loop: loop)
      let listenFaults: [(LoopFaults.Call, Int32)] = [
        (.socket, EMFILE), (.setsockopt, ENOMEM), (.bind, EADDRINUSE), (.listen, ENOBUFS),
      ]
      for (call, code) in listenFaults {
        faults.inject(call, code)
        if (try? listener.listen("tcp://127.0.0.1:0")) != nil { fail("round \(i): a listen survived \(call)") }
      }
      faults.inject(.accept, EMFILE)
      let local = try listener.listen("tcp://127.0.0.1:0")
      let caller = try Socket(FaultClient(), loop: peers)
      try caller.dial(local, reconnect: redial)
      waitFor("round \(i): the accept after a failed one") { listener.pipeCount == 1 }

      faults.inject(.socket, EMFILE)
      faults.inject(.setsockopt, ENOMEM)
      faults.inject(.connect, ECONNREFUSED)
      let client = try Socket(FaultClient(), loop: loop)
      try client.dial(bound, reconnect: redial)
      waitFor("round \(i): a dial after three failed ones") { client.pipeCount == 1 }
      // One fault at a time: with both armed, which pipe meets which
      // depends on the order the loop gets to them.
      faults.inject(.send, ENOBUFS)
      _ = try client.trySend([UInt8(i & 0x7f)])
      waitFor("round \(i): a failed send's pipe re-dialed") {
        client.statistics.pipeFailures == 1 && client.pipeCount == 1
      }
      // The next receive call fails: the one that reads the echo server's
      // end (it closes the pipe on 0xFF) on epoll, the re-dialed pipe's new
      // receive on io_uring (a multishot receive makes no further call).
      faults.inject(.receive, ENOMEM)
      _ = try client.trySend([0xFF])
      waitFor("round \(i): a failed receive's pipe re-dialed") {
        client.statistics.pipeFailures == 2 && client.pipeCount == 1
      }
      for call in [LoopFaults.Call.socket, .setsockopt, .bind, .listen, .accept, .connect, .send, .receive]
      where faults.isArmed(call) {
        fail("round \(i): the \(call) fault was not consumed")
      }
      if i % 2 == 0 {
        try client.close()
        try caller.close()
        try listener.close()
      } else {
        client.abort()
        caller.abort()
        listener.abort()
      }
    }
    let deadline = EventLoop.now() + 30_000_000_000
    while openDescriptorCount() > before && EventLoop.now() < deadline { usleep(10_000) }
    print("before=\(before) after=\(openDescriptorCount()) badCloses=\(LoopFaults.badCloses - badBefore)")
    server.abort()
    loop.shutdownAndWait()
    peers.shutdownAndWait()
  } catch {
    fail("\(error)")
  }
default:
  fail("unknown command")
}
