import UserProto

/// The backtrace at the front of an SP request or survey (RFC
/// sp-request-reply-01, which the survey pattern reuses): 32-bit
/// big-endian words, the hops devices added, up to and including the first
/// word with its high bit set (the request or survey id). REP v0 and
/// RESPONDENT v0 read it the same way; the reply or answer goes back with
/// it in front.
enum SPBacktrace {
  /// How many bytes the backtrace at the front of `input` takes (read in
  /// place, nothing consumed), or nil when it has more than `ttl` hops
  /// (values below 1 count as 1): the message is then dropped, and the pipe
  /// stays, as NNG does.
  /// - Parameters:
  ///   - length: the message's length (the backtrace cannot run past it).
  ///   - kind: what the message is, for the error ("request", "survey").
  /// - Throws: ``SocketError/protocolViolation(_:)`` when no word carries
  ///   the high bit before the message ends (that fails the pipe).
  static func length(in input: InboundBuffer, messageLength length: Int, ttl: Int, kind: String)
    throws(SocketError) -> Int?
  {
    let hopLimit = max(ttl, 1)
    var words = 0
    while true {
      guard length >= (words + 1) * 4, let word = input.peekBigEndian(UInt32.self, at: words * 4) else {
        throw .protocolViolation(
          "an SP \(kind) of \(length) bytes whose backtrace has no \(kind) id (no word with the high bit)")
      }
      words += 1
      if word & 0x8000_0000 != 0 { return words * 4 }
      if words >= hopLimit { return nil }
    }
  }

  /// The 4 big-endian bytes of `id` (a request or survey id).
  static func word(_ id: UInt32) -> [UInt8] {
    [UInt8(id >> 24), UInt8(id >> 16 & 0xff), UInt8(id >> 8 & 0xff), UInt8(id & 0xff)]
  }
}

/// The REP side of request/reply, shared by REP v0 and RESPONDENT v0:
/// the requests (or surveys) delivered and not answered yet, oldest first,
/// each with its pipe and backtrace, and the reply path. The application's
/// sends answer them in the order they were delivered. Loop-confined.
struct SPReplyQueue {
  private struct Pending {
    let pipeID: UInt64
    let backtrace: [UInt8]
  }
  private var unanswered: [Pending] = []
  private var start = 0

  /// Delivered and not answered yet.
  var count: Int { unanswered.count - start }

  /// What became of an incoming request.
  enum Taken { case delivered, overTTL, overLimit }

  /// Reads the backtrace of the message at the front of `input` (`length`
  /// bytes) in place, delivers the body and remembers where the reply goes;
  /// a message over `ttl` hops or beyond `limit` waiting ones is dropped.
  /// - Throws: ``SocketError/protocolViolation(_:)`` for a backtrace without
  ///   an id (that fails the pipe), or what delivering throws.
  mutating func take(
    _ input: inout InboundBuffer, length: Int, from pipe: SocketPipe, ttl: Int, limit: Int, kind: String,
    context: SocketContext
  ) throws(SocketError) -> Taken {
    guard let backtraceLength = try SPBacktrace.length(in: input, messageLength: length, ttl: ttl, kind: kind)
    else { return .overTTL }  // too many hops: dropped, the pipe stays
    guard count < limit else { return .overLimit }
    let backtrace = input.readBytes(backtraceLength) ?? []
    try context.deliver(input.readBytes(length - backtraceLength) ?? [])
    unanswered.append(Pending(pipeID: pipe.id, backtrace: backtrace))
    return .delivered
  }

  /// What became of a reply.
  enum Replied { case sent, noneWaiting, peerGone, peerStalled }

  /// Sends `message` back to the oldest unanswered request's pipe, behind
  /// its backtrace; the reply is dropped if its pipe has gone or cannot
  /// take it.
  mutating func reply(_ message: [UInt8], through pipes: SPPipes) -> Replied {
    guard start < unanswered.count else { return .noneWaiting }
    let request = unanswered[start]
    start += 1
    if start == unanswered.count {
      unanswered.removeAll(keepingCapacity: true)
      start = 0
    } else if start >= 64 && start * 2 >= unanswered.count {
      unanswered.removeFirst(start)
      start = 0
    }
    guard let pipe = pipes.readyPipe(id: request.pipeID) else { return .peerGone }
    guard pipe.isWritable else { return .peerStalled }
    do throws(SocketError) {
      try pipe.write(pipes.framing(of: pipe).frame(request.backtrace + message))
      return .sent
    } catch {
      return .peerGone
    }
  }
}
