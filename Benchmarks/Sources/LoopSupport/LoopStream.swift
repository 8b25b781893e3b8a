import BenchSupport
import Glibc
import UserProto

/// A connected socket driven by the raw loop operations: one multishot
/// receive, and one send in flight at a time with the rest queued and
/// coalesced (up to 256 KiB per send, as the library's stream transport
/// does). Loop-confined: create and use it on its loop.
public final class LoopStream: @unchecked Sendable {
  public let loop: UserProto.EventLoop
  public let fd: Int32
  /// Each received chunk; empty is never delivered (see `onEnd`).
  public var onBytes: (([UInt8]) -> Void)?
  /// End of stream or a receive error.
  public var onEnd: (() -> Void)?
  /// A send completed; `queuedBytes` is what is still waiting.
  public var onSent: (() -> Void)?
  public private(set) var queuedBytes = 0

  private var receiveHandle: IOHandle?
  private var sendHandle: IOHandle?
  private var queue: [[UInt8]] = []
  private var head = 0
  private var inFlight = 0
  private var closed = false
  private static let maximumSend = 256 * 1024

  public init(loop: UserProto.EventLoop, fd: Int32) {
    self.loop = loop
    self.fd = fd
  }

  /// Starts receiving. On the loop.
  public func start() throws {
    receiveHandle = try loop.receive(socket: fd) { [self] result in
      switch result {
      case .success(let bytes) where !bytes.isEmpty:
        onBytes?(bytes)
      default:
        receiveHandle = nil
        onEnd?()
      }
    }
  }

  /// Queues bytes to send. On the loop.
  public func write(_ bytes: [UInt8]) {
    guard !closed else { return }
    queue.append(bytes)
    queuedBytes += bytes.count
    pump()
  }

  private func pump() {
    guard !closed, sendHandle == nil, head < queue.count else { return }
    var chunk = queue[head]
    var next = head + 1
    while next < queue.count && chunk.count + queue[next].count <= LoopStream.maximumSend {
      chunk += queue[next]
      next += 1
    }
    inFlight = chunk.count
    do {
      sendHandle = try loop.send(socket: fd, chunk) { [self] result in
        sendHandle = nil
        guard case .success(let n) = result else { return close() }
        consume(n)
        pump()
        onSent?()
      }
    } catch {
      close()
    }
  }

  private func consume(_ n: Int) {
    queuedBytes -= n
    var remaining = n
    while remaining > 0 && head < queue.count {
      let count = queue[head].count
      if remaining >= count {
        remaining -= count
        head += 1
      } else {
        queue[head].removeFirst(remaining)
        remaining = 0
      }
    }
    if head == queue.count {
      queue.removeAll(keepingCapacity: true)
      head = 0
    }
  }

  /// Cancels everything and closes the fd. On the loop.
  public func close() {
    guard !closed else { return }
    closed = true
    if let receiveHandle { loop.cancel(receiveHandle) }
    if let sendHandle { loop.cancel(sendHandle) }
    receiveHandle = nil
    sendHandle = nil
    queue = []
    Glibc.close(fd)
  }
}

/// Splits a byte stream into 4-byte big-endian length-prefixed frames. The
/// same parser serves the raw and the ProtocolSocket side of SocketOverhead,
/// so only the layer differs.
public struct FrameParser {
  private var buffer: [UInt8] = []
  private var offset = 0
  public init() {}

  /// Appends `bytes` and calls `body` with each complete frame's payload.
  public mutating func append(_ bytes: [UInt8], _ body: ([UInt8]) throws -> Void) rethrows {
    if offset == buffer.count {
      buffer = bytes
      offset = 0
    } else {
      if offset > 0 {
        buffer.removeFirst(offset)
        offset = 0
      }
      buffer += bytes
    }
    while buffer.count - offset >= 4 {
      let length = readLength(buffer, at: offset)
      guard buffer.count - offset - 4 >= length else { break }
      try body(Array(buffer[(offset + 4)..<(offset + 4 + length)]))
      offset += 4 + length
    }
  }
}

/// A length prefix followed by `payload` (one copy, as an encoder makes).
@inline(__always) public func frame(_ payload: [UInt8]) -> [UInt8] {
  let n = payload.count
  var bytes = [UInt8]()
  bytes.reserveCapacity(4 + n)
  bytes.append(UInt8(n >> 24 & 0xff))
  bytes.append(UInt8(n >> 16 & 0xff))
  bytes.append(UInt8(n >> 8 & 0xff))
  bytes.append(UInt8(n & 0xff))
  bytes += payload
  return bytes
}

/// Creates a loop of `backend`, its thread pinned to `cpu` when given.
public func makePinnedLoop(_ backend: UserProto.EventLoop.BackendChoice, cpu: Int?, name: String) throws
  -> UserProto.EventLoop
{
  let loop = try UserProto.EventLoop(configuration: .init(backend: backend, name: name))
  if let cpu {
    let done = Latch()
    try loop.execute {
      pinCurrentThread(toCPU: cpu)
      done.countDown()
    }
    done.wait()
  }
  return loop
}

private final class OnLoopBox<T>: @unchecked Sendable {
  var result: Result<T, any Error>?
  let body: () throws -> T
  init(_ body: @escaping () throws -> T) { self.body = body }
}

/// Runs `body` on `loop` and waits for it.
public func onLoop<T>(_ loop: UserProto.EventLoop, _ body: @escaping () throws -> T) throws -> T {
  let box = OnLoopBox(body)
  let done = Latch()
  try loop.execute {
    box.result = Result { try box.body() }
    done.countDown()
  }
  done.wait()
  return try box.result!.get()
}
