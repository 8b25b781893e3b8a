import ArgumentParser
import ExampleProtocols
import Glibc
import UserProto

/// `userproto cat --req0 --dial tcp://127.0.0.1:5555 --data hello --quoted`
///
/// A drop-in for nngcat (NNG 1.5.2): the same options (see ``CatOptions``),
/// messages printed byte for byte as nngcat prints them (``CatFormat``), the
/// same error messages on stderr and exit status 1, on UserProto's SP
/// sockets. Argument parsing is nngcat's own, not ArgumentParser's: this
/// command takes every argument as is (even `--help`, which prints
/// nngcat's usage and exits 1, as nngcat does).
struct CatCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cat",
    abstract: "nngcat on UserProto's SP sockets: `userproto cat --help` lists nngcat's options.",
    helpNames: [])

  @Argument(parsing: .captureForPassthrough, help: "nngcat's arguments, e.g. --pull0 --listen tcp://127.0.0.1:5555 -A.")
  var arguments: [String] = []

  func run() throws {
    let options: CatOptions
    do throws(CatOptions.Failure) {
      options = try CatOptions.parse(arguments)
    } catch {
      switch error {
      case .help:
        catWrite(Array(CatOptions.help.utf8))
        Glibc.exit(1)
      case .version:
        catWrite(Array((CatOptions.version + "\n").utf8))
        Glibc.exit(0)
      case .fatal(let message):
        catFatal(message)
      }
    }
    let data: [UInt8]? =
      switch options.source {
      case .data(let bytes): bytes
      case .file(let path): loadCatFile(path)
      case nil: nil
      }
    let loop = try EventLoop()
    defer { loop.shutdownAndWait() }
    let socketOptions = options.recvMaxSize.map { SocketOptions(maximumMessageSize: $0) } ?? SocketOptions()
    let session = CatSession(options: options, data: data)
    switch options.proto {
    case .req0:
      try session.run(Socket(Req0Handler(), loop: loop, options: socketOptions)) { socket in
        // Like NNG_ESTATE: no request waits for its reply.
        try socket.withHandlerAndWait { handler, _ in handler.outstandingRequestID == nil }
      }
    case .surveyor0:
      try session.run(Socket(Surveyor0Handler(), loop: loop, options: socketOptions)) { socket in
        // Like NNG_ESTATE: the survey time is over.
        try socket.withHandlerAndWait { handler, _ in handler.currentSurveyID == nil }
      }
    case .rep0: try session.run(Socket(Rep0Handler(), loop: loop, options: socketOptions))
    case .respondent0: try session.run(Socket(Respondent0Handler(), loop: loop, options: socketOptions))
    case .pub0: try session.run(Socket(Pub0Handler(), loop: loop, options: socketOptions))
    case .sub0:
      let topics = options.topics.map { Array($0.utf8) }
      try session.run(Socket(Sub0Handler(subscriptions: topics), loop: loop, options: socketOptions))
    case .push0: try session.run(Socket(Push0Handler(), loop: loop, options: socketOptions))
    case .pull0: try session.run(Socket(Pull0Handler(), loop: loop, options: socketOptions))
    case .pair0: try session.run(Socket(Pair0Handler(), loop: loop, options: socketOptions))
    case .bus0: try session.run(Socket(Bus0Handler(), loop: loop, options: socketOptions))
    case .pair1: try session.run(Socket(Pair1Handler(), loop: loop, options: socketOptions))
    }
  }
}

/// One run of `userproto cat`: nngcat's `recvloop`, `resploop`, `sendloop`
/// and `sendrecv` on a socket of any SP protocol.
struct CatSession {
  var options: CatOptions
  var data: [UInt8]?

  /// Dials and listens on the options' addresses in order, then runs the
  /// loop nngcat runs for the protocol. `finished` says that nothing can be
  /// received now (NNG_ESTATE: REQ with no request outstanding, SURVEYOR
  /// after the survey time); receiving then ends as a timeout does.
  func run<Handler: SocketHandler>(
    _ socket: Socket<Handler>, finished: (Socket<Handler>) throws -> Bool = { _ in false }
  ) throws {
    defer { socket.abort() }
    try attach(socket)
    switch options.proto {
    case .sub0, .pull0:
      try receiveLoop(socket, ended: finished)
    case .rep0, .respondent0:
      if let data { try respondLoop(socket, data, ended: finished) } else { try receiveLoop(socket, ended: finished) }
    case .push0, .pub0:
      try sendLoop(socket, data ?? [])
    case .pair0, .pair1, .bus0:
      if let data { try sendReceive(socket, data, ended: finished) } else { try receiveLoop(socket, ended: finished) }
    case .req0, .surveyor0:
      try sendReceive(socket, data ?? [], ended: finished)
    }
  }

  // MARK: Addresses

  /// nngcat creates each dialer or listener (a bad URL fails there), then
  /// starts it: a listen fails at once (address in use...), and a dial
  /// without `--async` waits for its first attempt and fails with it.
  private func attach<Handler: SocketHandler>(_ socket: Socket<Handler>) throws {
    for address in options.addresses {
      let purpose: TransportURL.Purpose = address.mode == .dial ? .dial : .listen
      let url: TransportURL
      do throws(SocketError) {
        url = try TransportURL(address.url, for: purpose)
      } catch {
        // A host name that does not resolve fails when NNG starts the
        // dialer or listener; anything else when it creates it.
        if case .badAddress(_, let why) = error, why.hasPrefix("cannot resolve") {
          catFatal("Unable to \(address.mode == .dial ? "dial" : "listen") on \(address.url): Address invalid")
        }
        let what = address.mode == .dial ? "dialer" : "listener"
        catFatal("Unable to create \(what) for \(address.url): \(Self.createFailure(address.url))")
      }
      switch address.mode {
      case .listen:
        do throws(SocketError) {
          try socket.listen(url)
        } catch {
          catFatal("Unable to listen on \(address.url): \(Self.nngMessage(error))")
        }
        if options.verbosity == .verbose { catWrite(Array("Listening at: \(address.url)\n".utf8)) }
      case .dial:
        let before = socket.statistics
        do throws(SocketError) {
          try socket.dial(url)
        } catch {
          catFatal("Unable to dial on \(address.url): \(Self.nngMessage(error))")
        }
        if !options.async { waitForFirstAttempt(socket, since: before, url: address.url) }
        if options.verbosity == .verbose { catWrite(Array("Connected to: \(address.url)\n".utf8)) }
      }
    }
  }

  /// A synchronous dial, as nngcat's without `--async`: waits until the
  /// dialer's first attempt connected (a pipe was added) or failed (the
  /// dialer started a re-dial). The socket keeps no reason for a failed
  /// connect, so the message is the usual one: "Connection refused".
  private func waitForFirstAttempt<Handler: SocketHandler>(
    _ socket: Socket<Handler>, since before: SocketStatistics, url: String
  ) {
    while true {
      let now = socket.statistics
      if now.pipesAdded > before.pipesAdded { return }
      if now.reconnects > before.reconnects { catFatal("Unable to dial on \(url): Connection refused") }
      sleepMilliseconds(10)
    }
  }

  /// NNG's reason for a URL it cannot make a dialer or listener for.
  static func createFailure(_ url: String) -> String {
    let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
    guard parts.count == 2 else { return "Invalid argument" }
    let known = ["tcp", "tcp4", "tcp6", "ipc", "inproc", "udp"]
    return known.contains(parts[0].lowercased()) ? "Address invalid" : "Not supported"
  }

  /// NNG's `nng_strerror` words for a listen or dial failure.
  static func nngMessage(_ error: SocketError) -> String {
    switch error {
    case .badAddress: return "Address invalid"
    case .closed: return "Object closed"
    case .transport(let io):
      switch io.code {
      case EADDRINUSE: return "Address in use"
      case EADDRNOTAVAIL: return "Address invalid"
      case EACCES, EPERM: return "Permission denied"
      case ECONNREFUSED: return "Connection refused"
      case ENOENT: return "Entity not found"
      default: return String(cString: strerror(io.code))
      }
    default: return "\(error)"
    }
  }

  // MARK: nngcat's loops

  /// `recvloop`: prints what arrives until `--count` receives, a receive
  /// timeout or the end of a survey or request.
  private func receiveLoop<Handler: SocketHandler>(
    _ socket: Socket<Handler>, ended: (Socket<Handler>) throws -> Bool
  ) throws {
    var attempts = 0
    while options.count == 0 || attempts < options.count {
      attempts += 1
      guard let message = try receive(socket, milliseconds: receiveTimeout, ended: ended) else { return }
      printMessage(message)
    }
  }

  /// `resploop`: answers each request (or survey) with the data.
  private func respondLoop<Handler: SocketHandler>(
    _ socket: Socket<Handler>, _ data: [UInt8], ended: (Socket<Handler>) throws -> Bool
  ) throws {
    var answered = 0
    while true {
      guard let message = try receive(socket, milliseconds: receiveTimeout, ended: ended) else {
        catFatal("Receive error: Timed out")
      }
      printMessage(message)
      try send(data, on: socket)
      answered += 1
      if options.count > 0 && answered >= options.count { break }
    }
    sleepMilliseconds(200)  // as nngcat: a chance for the queues to drain
  }

  /// `sendloop`: sends the data once, `--count` times, or every
  /// `--interval` seconds.
  private func sendLoop<Handler: SocketHandler>(_ socket: Socket<Handler>, _ data: [UInt8]) throws {
    sleepMilliseconds(options.delay * 1000)
    var sent = 0
    while true {
      let start = EventLoop.now()
      try send(data, on: socket)
      sent += 1
      if (options.interval == nil && options.count == 0) || (options.count > 0 && sent >= options.count) { break }
      sleepUntilInterval(since: start)
    }
    sleepMilliseconds(200)  // as nngcat: a chance for the queues to drain
  }

  /// `sendrecv`: sends, prints what answers until the next send is due (or
  /// a receive timeout, or the end of the survey or request), and again
  /// with `--count` or `--interval`. Unlike nngcat, the wait left before
  /// the next send stops at zero (nngcat passes a negative receive timeout
  /// to NNG and dies with "Cannot set recv timeout: Invalid argument");
  /// with `--count` and no `--interval`, each round waits for its answers
  /// as a single send does.
  private func sendReceive<Handler: SocketHandler>(
    _ socket: Socket<Handler>, _ data: [UInt8], ended: (Socket<Handler>) throws -> Bool
  ) throws {
    sleepMilliseconds(options.delay * 1000)
    var rounds = 0
    while true {
      let start = EventLoop.now()
      try send(data, on: socket)
      if options.interval == nil && options.count == 0 {
        try receiveLoop(socket, ended: ended)
        return
      }
      while true {
        let elapsed = Int((EventLoop.now() - start) / 1_000_000)
        var expire = options.interval.map { max(0, $0 * 1000 - elapsed) }
        if let limit = options.recvTimeout.map({ $0 * 1000 }), expire.map({ $0 > limit }) ?? true {
          expire = limit
        }
        guard let message = try receive(socket, milliseconds: expire, ended: ended) else { break }
        printMessage(message)
      }
      rounds += 1
      if options.count > 0 && rounds >= options.count { return }
      sleepUntilInterval(since: start)
    }
  }

  // MARK: Sending and receiving

  /// The socket's receive timeout (NNG_OPT_RECVTIMEO): set when positive.
  private var receiveTimeout: Int? { options.recvTimeout.flatMap { $0 > 0 ? $0 * 1000 : nil } }

  /// Sends as nng_sendmsg does: returns once the protocol took the message
  /// (a PUSH with no pull peer yet waits for one), for up to the send
  /// timeout (NNG_OPT_SENDTIMEO, set when positive), then fails as nngcat.
  private func send<Handler: SocketHandler>(_ message: [UInt8], on socket: Socket<Handler>) throws {
    let timeout = options.sendTimeout.flatMap { $0 > 0 ? UInt64($0) * 1_000_000_000 : nil }
    let deadline = timeout.map { EventLoop.now() + $0 }
    let taken = socket.statistics.messagesSent
    var accepted = false
    while true {
      if !accepted {
        do throws(SocketError) {
          accepted = try socket.trySend(message)
        } catch {
          catFatal("Send error: \(error)")
        }
      }
      // Only this thread sends: one more taken is this message.
      if accepted && socket.statistics.messagesSent > taken { return }
      let wait = Self.pollMilliseconds(until: deadline)
      if wait == 0 { catFatal("Send error: Timed out") }
      if accepted {
        sleepMilliseconds(min(wait, 5))  // the fd shows nothing for "taken"
      } else {
        var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLOUT), revents: 0)
        _ = poll(&entry, 1, Int32(wait))
      }
    }
  }

  /// The next message, or nil once `milliseconds` passed (nil: no limit)
  /// or `ended` says nothing can come (NNG_ETIMEDOUT and NNG_ESTATE, which
  /// end nngcat's receive loops without an error).
  private func receive<Handler: SocketHandler>(
    _ socket: Socket<Handler>, milliseconds: Int?, ended: (Socket<Handler>) throws -> Bool
  ) throws -> [UInt8]? {
    let deadline = milliseconds.map { EventLoop.now() + UInt64($0) * 1_000_000 }
    while true {
      let result: ReceiveResult
      do throws(SocketError) {
        result = try socket.tryReceive()
      } catch {
        catFatal("Receive error: \(error)")
      }
      switch result {
      case .message(let message): return message
      case .endOfStream: catFatal("Receive error: Object closed")
      case .wouldBlock: break
      }
      if try ended(socket) {
        // The protocol may have ended (the reply came) after the receive
        // above: what it delivered is queued by the time `ended` answers.
        do throws(SocketError) {
          if case .message(let message) = try socket.tryReceive() { return message }
        } catch {
          catFatal("Receive error: \(error)")
        }
        return nil
      }
      let wait = Self.pollMilliseconds(until: deadline)
      if wait == 0 { return nil }
      var entry = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
      _ = poll(&entry, 1, Int32(wait))
    }
  }

  /// How long to poll before looking again: at most 100 ms (so `ended` is
  /// checked often), 0 once `deadline` has passed.
  private static func pollMilliseconds(until deadline: UInt64?) -> Int {
    guard let deadline else { return 100 }
    let now = EventLoop.now()
    guard now < deadline else { return 0 }
    return min(100, Int((deadline - now + 999_999) / 1_000_000))
  }

  private func printMessage(_ message: [UInt8]) {
    guard let format = options.format else { return }  // no format option: nngcat prints nothing
    catWrite(format.render(message))
  }

  /// Sleeps what is left of `--interval` since `start` (nothing if the
  /// round took longer).
  private func sleepUntilInterval(since start: UInt64) {
    guard let interval = options.interval else { return }
    let elapsed = Int((EventLoop.now() - start) / 1_000_000)
    if elapsed < interval * 1000 { sleepMilliseconds(interval * 1000 - elapsed) }
  }
}

/// Writes `bytes` to `fd` (stdout) at once, as nngcat flushes stdout after
/// each message. (write(2), not stdio: Glibc's `stdout` is a global var
/// that strict concurrency refuses.)
func catWrite(_ bytes: [UInt8], to fd: Int32 = STDOUT_FILENO) {
  var offset = 0
  while offset < bytes.count {
    let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if n < 0 && errno == EINTR { continue }
    guard n > 0 else { return }  // stdout closed: nothing more can be shown
    offset += n
  }
}

/// nngcat's `fatal`: the message and a newline on stderr, exit status 1.
func catFatal(_ message: String) -> Never {
  catWrite(Array((message + "\n").utf8), to: STDERR_FILENO)
  exit(1)
}

/// Sleeps `milliseconds` (nothing for 0 or less), resuming after signals.
func sleepMilliseconds(_ milliseconds: Int) {
  guard milliseconds > 0 else { return }
  var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
  var remaining = timespec()
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// nngcat's `loadfile`: the whole file (`-`: standard input), or its
/// error and exit status 1.
func loadCatFile(_ path: String) -> [UInt8] {
  let fd = path == "-" ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)
  if fd < 0 { catFatal("Cannot open file \(path): \(String(cString: strerror(errno)))") }
  defer { if fd != STDIN_FILENO { _ = Glibc.close(fd) } }
  var data: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    if n < 0 {
      if errno == EINTR { continue }
      catFatal("Read from \(path) failed: \(String(cString: strerror(errno)))")
    }
    if n == 0 { return data }
    data += buffer[..<n]
  }
}
