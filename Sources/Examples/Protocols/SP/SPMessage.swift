/// A raw SP message split into its SP header and its body.
///
/// A raw socket (``SPRawHandler``) delivers and sends each message as one
/// `[UInt8]`: the SP header, then the body, with nothing between them. That
/// is what NNG's `nng_msg` header and body are once put end to end, and what
/// goes on the wire, so a device forwards the bytes unchanged. Where the
/// header ends follows from the protocol (``headerLength(of:for:)``), so no
/// length is stored:
///
/// | raw protocol | header |
/// |---|---|
/// | REP, RESPONDENT | the receiving pipe's id (high bit clear), then the backtrace up to and including the request or survey id (the first word with its high bit set) |
/// | REQ, SURVEYOR | the backtrace up to and including the request or survey id |
/// | BUS | the pipe id of the sender (0: none) |
/// | PAIR v1 | the hop count |
/// | PUB, SUB, PUSH, PULL, PAIR v0 | none |
///
/// Every header is made of 32-bit big-endian words (``headerWords``).
///
/// ```swift
/// // An asynchronous raw REP server: replies may go in any order.
/// for try await bytes in rep.messages {
///   guard let request = SPMessage(bytes, for: .rep0) else { continue }
///   try await rep.send(SPMessage(header: request.header, body: answer(request.body)).bytes)
/// }
/// ```
public struct SPMessage: Sendable, Hashable {
  /// The SP header: routing words (pipe ids, a request or survey id) or a hop count.
  public var header: [UInt8]
  /// The application's payload.
  public var body: [UInt8]

  /// A message with this header and body.
  public init(header: [UInt8], body: [UInt8]) {
    self.header = header
    self.body = body
  }

  /// Splits the bytes a raw socket speaking `protocolID` delivered (or will
  /// send) into header and body; nil when they do not start with a whole
  /// header of that protocol.
  public init?(_ bytes: [UInt8], for protocolID: SPProtocolID) {
    guard let length = Self.headerLength(of: bytes, for: protocolID) else { return nil }
    header = Array(bytes[0..<length])
    body = Array(bytes[length...])
  }

  /// The header, then the body: what a raw socket sends and delivers.
  public var bytes: [UInt8] { header + body }

  /// The header as 32-bit big-endian words (the pipe ids and the request
  /// id of a REP backtrace, say); a trailing partial word is left out.
  public var headerWords: [UInt32] {
    stride(from: 0, to: header.count - header.count % 4, by: 4).map { Self.word(header, at: $0) }
  }

  /// The pipe id words carry: 31 bits, the high bit clear (as NNG's pipe
  /// ids, which run from 1 to 0x7fffffff).
  public static let largestPipeID: UInt32 = 0x7fff_ffff

  /// How many bytes at the front of `bytes` are the SP header of a raw
  /// `protocolID` message (the table in ``SPMessage``); nil when `bytes` is
  /// shorter than that header, or a backtrace has no word with its high
  /// bit set.
  public static func headerLength(of bytes: [UInt8], for protocolID: SPProtocolID) -> Int? {
    switch protocolID {
    case .rep0, .respondent0:
      guard bytes.count >= 4 else { return nil }
      return backtraceEnd(in: bytes, from: 4)
    case .req0, .surveyor0:
      return backtraceEnd(in: bytes, from: 0)
    case .bus0, .pair1:
      return bytes.count >= 4 ? 4 : nil
    case .pub0, .sub0, .push0, .pull0, .pair0:
      return 0
    }
  }

  /// The offset just past the first word at or after `start` whose high
  /// bit is set (the end of a backtrace), or nil when there is none.
  static func backtraceEnd(in bytes: [UInt8], from start: Int) -> Int? {
    var offset = start
    while offset + 4 <= bytes.count {
      let last = bytes[offset] & 0x80 != 0
      offset += 4
      if last { return offset }
    }
    return nil
  }

  /// The big-endian word at `offset` of `bytes` (which has 4 bytes there).
  static func word(_ bytes: [UInt8], at offset: Int) -> UInt32 {
    bytes[offset..<(offset + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
  }
}
