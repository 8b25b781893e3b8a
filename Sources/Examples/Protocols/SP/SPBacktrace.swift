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
