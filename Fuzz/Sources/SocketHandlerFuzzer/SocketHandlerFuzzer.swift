import ExampleProtocols
import FuzzSupport
import UserProto

// A socket and its handler driven over in-memory pipes by a program the
// input spells: peers that write bytes, headers, frames and replies, and
// pause, resume, half-close, close or reset; pipes added and closed from
// the socket's side; the application's sends, receives, shutdown, close
// and abort, and protocol calls through the handler. After every step,
// and around every application call, the readiness invariant must hold:
// the fd is readable exactly when a receive would not block, writable
// exactly when a send would not block, and it shows what the state says.

@_cdecl("LLVMFuzzerTestOneInput")
public func socketHandlerFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  var input = FuzzInput(fuzzBytes(data, size))
  let kind = input.pick(Kind.allCases)
  let setup = Setup(&input)
  let steps = readSteps(&input)
  let script = LoopScript()  // starts the fuzz loop on the first input, before the count
  let descriptors = openDescriptorCount()
  script.run {
    let quick = setup.quickTimers
    let timeout: Duration = quick ? .nanoseconds(1) : .seconds(3600)
    switch kind {
    case .pull: Run(Pull0Handler(headerTimeout: timeout), kind, setup, steps, script).start()
    case .bus: Run(Bus0Handler(headerTimeout: timeout), kind, setup, steps, script).start()
    case .pair: Run(Pair0Handler(headerTimeout: timeout), kind, setup, steps, script).start()
    case .sub: Run(Sub0Handler(subscriptions: [[]], headerTimeout: timeout), kind, setup, steps, script).start()
    case .push: Run(Push0Handler(headerTimeout: timeout), kind, setup, steps, script).start()
    case .pub: Run(Pub0Handler(headerTimeout: timeout), kind, setup, steps, script).start()
    case .rep:
      Run(Rep0Handler(maximumUnansweredRequests: 4, headerTimeout: timeout), kind, setup, steps, script).start()
    case .respondent:
      Run(Respondent0Handler(maximumUnansweredSurveys: 4, headerTimeout: timeout), kind, setup, steps, script)
        .start()
    case .req:
      Run(Req0Handler(resendInterval: timeout, headerTimeout: timeout), kind, setup, steps, script).start()
    case .surveyor:
      Run(Surveyor0Handler(surveyTime: timeout, headerTimeout: timeout), kind, setup, steps, script).start()
    case .framed: Run(FramedHandler(helloTimeout: timeout), kind, setup, steps, script).start()
    case .scripted: Run(ScriptedHandler(), kind, setup, steps, script).start()
    }
  }
  fuzzCheck(
    openDescriptorCount() == descriptors, "descriptors leaked: \(descriptors) before, \(openDescriptorCount()) after")
  return 0
}

/// The handlers this target drives.
enum Kind: CaseIterable {
  case pull, bus, pair, sub, push, pub, rep, respondent, req, surveyor, framed, scripted

  /// What a peer of this socket writes first: its SP header, the
  /// tutorial protocol's hello, or nothing.
  var greeting: [UInt8] {
    switch self {
    case .pull: SPWire.header(0x50)
    case .bus: SPWire.header(0x70)
    case .pair: SPWire.header(0x10)
    case .sub: SPWire.header(0x20)
    case .push: SPWire.header(0x51)
    case .pub: SPWire.header(0x21)
    case .rep: SPWire.header(0x30)
    case .respondent: SPWire.header(0x62)
    case .req: SPWire.header(0x31)
    case .surveyor: SPWire.header(0x63)
    case .framed: FramedHandler.hello
    case .scripted: []
    }
  }

  var isSP: Bool { self != .framed && self != .scripted }

  /// One message as this socket's peer frames it.
  func frame(_ body: [UInt8], ipc: Bool) -> [UInt8] {
    switch self {
    case .framed: FramedHandler.frame(body)
    case .scripted: body
    default: SPWire.frame(body, ipc: ipc)
    }
  }
}

/// The socket's limits and timers, from the input's first bytes.
struct Setup: Sendable {
  var options: SocketOptions
  /// Handler timers (SP header, hello, resend, survey) of 1 ns, which fire
  /// at the loop's next turn, instead of an hour.
  var quickTimers: Bool

  init(_ input: inout FuzzInput) {
    let sizes = [256, 1024, 16 * 1024, 256 * 1024]
    let sendHigh = input.pick(sizes)
    let receiveHigh = input.pick(sizes)
    options = SocketOptions(
      receiveHighWatermark: receiveHigh, receiveLowWatermark: receiveHigh / input.pick([1, 2, 4]),
      sendHighWatermark: sendHigh, sendLowWatermark: sendHigh / input.pick([1, 2, 4]),
      maximumMessageSize: input.pick([64, 4096, 1 << 20]))
    quickTimers = input.byte() & 1 != 0
  }
}

/// One step of the program.
enum Step {
  /// Peer `peer` (of those attached, modulo their number) does `action`.
  case peer(Int, PeerAction)
  /// A new peer connects, on an `ipc://` pipe or an `inproc://` one.
  case attach(ipc: Bool)
  /// The socket closes one of its pipes, with or without an error.
  case closePipe(Int, failing: Bool)
  /// The application sends a message of this many bytes, starting with these.
  case send(size: Int, start: [UInt8])
  case receive
  case receiveAll
  case shutdownWrite
  case close
  case abort
  /// A protocol call through the handler (subscribe, change a timer...).
  case call(UInt8, [UInt8])
  /// Lets the loop run this many tasks first.
  case settle(Int)
}

enum PeerAction {
  case raw([UInt8])
  case greeting
  case frame([UInt8])
  /// REQ, SURVEYOR: a reply to the latest request; REP, RESPONDENT: a
  /// request with hops; others: a frame.
  case reply([UInt8], hops: Int)
  case pause, resume, shutdownWrite, close, reset
}

func readSteps(_ input: inout FuzzInput) -> [Step] {
  var steps: [Step] = []
  while !input.isExhausted && steps.count < 256 {
    let step: Step
    switch input.int(in: 0...19) {
    case 0, 1: step = .peer(input.int(in: 0...3), .raw(input.blob(maximum: 48)))
    case 2: step = .peer(input.int(in: 0...3), .greeting)
    case 3, 4: step = .peer(input.int(in: 0...3), .frame(input.blob(maximum: 96)))
    case 5: step = .peer(input.int(in: 0...3), .reply(input.blob(maximum: 32), hops: input.int(in: 0...3)))
    case 6: step = .peer(input.int(in: 0...3), input.pick([.pause, .resume, .shutdownWrite, .close, .reset]))
    case 7: step = .attach(ipc: input.bool())
    case 8: step = .closePipe(input.int(in: 0...3), failing: input.bool())
    case 9, 10:
      // Sizes around the limits: empty, small, the smallest maximum, one
      // over it, and large ones that fill the queues.
      let size = input.pick([0, 1, 7, 63, 64, 65, 300, 4096, 4097, 20_000, 70_000])
      step = .send(size: size, start: input.bytes(input.int(in: 0...2)))
    case 11, 12: step = .receive
    case 13: step = .receiveAll
    case 14: step = input.int(in: 0...3) == 0 ? .shutdownWrite : .settle(input.int(in: 0...32))
    case 15: step = input.int(in: 0...7) == 0 ? .close : .settle(input.int(in: 0...8))
    case 16: step = input.int(in: 0...15) == 0 ? .abort : .receive
    case 17: step = .call(input.byte(), input.blob(maximum: 4))
    default: step = .settle(input.int(in: 0...4))
    }
    steps.append(step)
  }
  return steps
}

/// One program against a `Socket<H>`, as a chain of loop steps.
final class Run<H: SocketHandler> {
  private let kind: Kind
  private let setup: Setup
  private let steps: [Step]
  private let script: LoopScript
  private let socket: Socket<H>
  /// Every peer attached so far, and whether its pipe is on `ipc://`.
  private var peers: [(peer: MemoryPeer, ipc: Bool)] = []
  /// Descriptors without close-on-exec before the socket was made (the
  /// fuzzer's own, if any): every one made since must have it.
  private let baselineWithoutCloseOnExec: Set<Int32>

  init(_ handler: sending H, _ kind: Kind, _ setup: Setup, _ steps: [Step], _ script: LoopScript) {
    self.kind = kind
    self.setup = setup
    self.steps = steps
    self.script = script
    baselineWithoutCloseOnExec = Set(descriptorsWithoutCloseOnExec())
    do {
      socket = try Socket(handler, loop: fuzzLoop, options: setup.options)
    } catch {
      fatalError("a socket cannot be made: \(error)")
    }
  }

  /// On the loop: one peer to begin with, then the steps.
  func start() {
    _ = socket.fileDescriptor  // the mask fd follows the state from now on
    attach(ipc: false)
    let fresh = Set(descriptorsWithoutCloseOnExec()).subtracting(baselineWithoutCloseOnExec)
    fuzzCheck(fresh.isEmpty, "descriptors without close-on-exec: \(fresh.sorted())")
    step(0)
  }

  private func check(_ context: @autoclosure () -> String) {
    probe(socket).check("\(kind): \(context())")
    checkAccounting(socket, "\(kind): \(context())")
  }

  private func step(_ index: Int) {
    check("before step \(index)")
    guard index < steps.count else {
      tearDown()
      return
    }
    var hops = 1
    switch steps[index] {
    case .peer(let which, let action):
      if !peers.isEmpty { perform(action, peers[which % peers.count]) }
    case .attach(let ipc):
      if peers.count < 8 { attach(ipc: ipc) }
    case .closePipe(let which, let failing):
      let up = pipes(of: socket)
      if !up.isEmpty { up[which % up.count].close(error: failing ? .protocolViolation("closed by the fuzzer") : nil) }
    case .send(let size, let start):
      send(start + Array(repeating: 0x61, count: max(0, size - start.count)))
    case .receive:
      receive()
    case .receiveAll:
      while receive() {}
    case .shutdownWrite:
      _ = try? socket.shutdownWrite()
    case .close:
      _ = try? socket.close()
    case .abort:
      socket.abort()
    case .call(let what, let bytes):
      call(what, bytes)
    case .settle(let count):
      hops = count
    }
    check("after step \(index): \(steps[index])")
    script.after(hops: hops) { [self] in step(index + 1) }
  }

  private func attach(ipc: Bool) {
    let url: TransportURL
    do {
      url = ipc ? .ipc(try SocketAddress(unixPath: "/fuzz/\(peers.count).sock")) : .inproc("fuzz-\(peers.count)")
    } catch {
      fatalError("\(error)")
    }
    peers.append((MemoryPeer.attach(to: socket, url: url), ipc))
  }

  private func perform(_ action: PeerAction, _ target: (peer: MemoryPeer, ipc: Bool)) {
    let (peer, ipc) = target
    switch action {
    case .raw(let bytes): peer.write(bytes)
    case .greeting: peer.write(kind.greeting)
    case .frame(let body): peer.write(kind.frame(body, ipc: ipc))
    case .reply(let body, let hops):
      switch kind {
      case .req, .surveyor:
        let requests = SPWire.parse(peer.received, ipc: ipc).messages
        let id = requests.last.flatMap { SPWire.word(in: $0, at: 0) } ?? 0x8000_0000
        peer.write(SPWire.frame(SPWire.word(id) + body, ipc: ipc))
      case .rep, .respondent:
        let trace = (0..<hops).flatMap { SPWire.word(UInt32($0)) } + SPWire.word(0x8000_0000 | UInt32(body.count))
        peer.write(SPWire.frame(trace + body, ipc: ipc))
      default:
        peer.write(kind.frame(body, ipc: ipc))
      }
    case .pause: peer.pauseReading()
    case .resume: peer.resumeReading()
    case .shutdownWrite: peer.shutdownWrite()
    case .close: peer.close()
    case .reset: peer.reset()
    }
  }

  /// A send, against the readiness just before it: it returns false
  /// exactly when the socket was not writable.
  private func send(_ message: [UInt8]) {
    let before = probe(socket)
    let accepted: Bool
    do throws(SocketError) {
      accepted = try socket.trySend(message)
    } catch {
      if case .messageTooLarge = error {
        fuzzCheck(message.count > setup.options.maximumMessageSize, "\(message.count) bytes refused as too large")
      } else if before.closed {
        fuzzCheck(error == .closed, "a send after close threw \(error)")
      } else {
        fuzzCheck(before.writable, "a send threw \(error) while not writable: \(before)")
      }
      return
    }
    fuzzCheck(message.count <= setup.options.maximumMessageSize, "\(message.count) bytes taken over the limit")
    fuzzCheck(!before.closed, "a send was taken after close")
    fuzzCheck(accepted == before.writable, "trySend returned \(accepted) while \(before)")
  }

  /// A receive, against the readiness just before it; true when it got a
  /// message.
  @discardableResult
  private func receive() -> Bool {
    let before = probe(socket)
    do throws(SocketError) {
      let result = try socket.tryReceive()
      fuzzCheck(!before.closed, "a receive after close returned \(result)")
      fuzzCheck((result == .wouldBlock) == !before.readable, "tryReceive returned \(result) while \(before)")
      if case .message = result { return true }
    } catch {
      if before.closed {
        fuzzCheck(error == .closed, "a receive after close threw \(error)")
      } else {
        fuzzCheck(before.readable, "a receive threw \(error) while not readable: \(before)")
      }
    }
    return false
  }

  /// A protocol call on the loop, through the handler and its context.
  private func call(_ what: UInt8, _ bytes: [UInt8]) {
    let quick = setup.quickTimers
    _ = try? socket.withHandlerAndWait { handler, context in
      switch what % 6 {
      case 0: _ = try context.discardReceivedMessages()
      case 1: try context.resumeSends()
      case 2:
        if let sub = handler as? Sub0Handler {
          if bytes.first.map({ $0 & 1 == 0 }) ?? true { sub.subscribe(bytes) } else { sub.unsubscribe(bytes) }
        }
      case 3:
        let interval: Duration = quick ? .nanoseconds(1) : .seconds(3600)
        (handler as? Req0Handler)?.resendInterval = bytes.isEmpty ? .zero : interval
        (handler as? Surveyor0Handler)?.surveyTime = bytes.isEmpty ? .zero : interval
      case 4:
        (handler as? Rep0Handler)?.ttl = Int(bytes.first ?? 0) % 16
        (handler as? Respondent0Handler)?.ttl = Int(bytes.first ?? 0) % 16
      default:
        if bytes.first == 0xF1 { try context.finishReceiving() }
      }
    }
  }

  private func tearDown() {
    let statistics = socket.statistics
    fuzzCheck(
      statistics.pipesAdded - statistics.pipesRemoved == statistics.pipes || probe(socket).closed,
      "pipes added and removed do not add up: \(statistics)")
    finishNow(socket)
    fuzzCheck(isFinished(socket), "the socket did not finish")
    check("after the socket finished")
    script.after(hops: 8) { [self] in
      // Every pipe ended with the socket: each peer that still reads saw
      // its end, or its pipe failed.
      for (index, (peer, _)) in peers.enumerated() where !peer.isClosed && !peer.isPaused {
        fuzzCheck(peer.sawEnd || peer.failure != nil, "peer \(index) did not see the socket go")
      }
      for (peer, _) in peers { peer.close() }
      peers = []
      script.after(hops: 4) { [self] in script.finish() }
    }
  }
}
