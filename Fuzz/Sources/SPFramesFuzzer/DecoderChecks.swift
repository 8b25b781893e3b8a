import FuzzSupport

@testable import ExampleProtocols
@testable import UserProto

/// The SP decoders that need no socket, on the raw input: the backtrace
/// reader of both designs, the frame and header encoders, and the input
/// buffer every handler parses in place.
func checkDecoders(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  let ttl = input.int(in: 0...16)
  let skip = input.int(in: 0...7)
  let cut = input.int(in: 0...255)
  let message = input.rest()
  checkBacktrace(message, ttl: ttl, skip: skip, cut: cut)
  checkEncoders(message)
  checkInboundBuffer(bytes)
}

/// `SPBacktrace.length` (REP v0, RESPONDENT v0) against the RFC's rule,
/// on a buffer whose reader is `skip` bytes in, for the whole message and
/// for a message length `cut` shorter.
private func checkBacktrace(_ message: [UInt8], ttl: Int, skip: Int, cut: Int) {
  var buffer = InboundBuffer(Array(repeating: 0xEE, count: skip) + message)
  buffer.moveReaderIndex(forwardBy: skip)
  for length in Set([message.count, max(0, message.count - cut)]) {
    let expected = Backtrace(message[..<length], ttl: ttl)
    let actual: Backtrace
    do throws(SocketError) {
      if let found = try SPBacktrace.length(in: buffer, messageLength: length, ttl: ttl, kind: "request") {
        actual = .length(found)
      } else {
        actual = .overTTL
      }
    } catch {
      guard case .protocolViolation = error else {
        fuzzCheck(false, "a backtrace error that is not a protocol violation: \(error)")
        return
      }
      actual = .noID
    }
    fuzzCheck(
      actual == expected, "backtrace of \(message.prefix(length)) (ttl \(ttl)): \(actual), expected \(expected)")
  }
}

/// The encoders against the wire format: frames of both mappings, the
/// 8-byte headers, ids, and the tutorial protocol's 4-byte frames.
private func checkEncoders(_ body: [UInt8]) {
  for framing in [SPFraming.tcp, .ipc] {
    let ipc = framing == .ipc
    fuzzCheck(framing.frame(body) == SPWire.frame(body, ipc: ipc), "\(framing) frame of \(body.count) bytes")
    fuzzCheck(framing.prefixLength == (ipc ? 9 : 8), "\(framing) prefix length")
  }
  for id in SPProtocolID.allCases {
    fuzzCheck(id.header == SPWire.header(id.rawValue), "the header of \(id)")
    fuzzCheck(SPProtocolID(rawValue: id.rawValue) == id, "\(id) from its raw value")
  }
  if let word = SPWire.word(in: body, at: 0) {
    fuzzCheck(SPBacktrace.word(word) == SPWire.word(word), "SPBacktrace.word(\(word))")
    if let id = SPProtocolID(rawValue: UInt16(truncatingIfNeeded: word)) {
      fuzzCheck(id.rawValue == UInt16(truncatingIfNeeded: word), "SPProtocolID(rawValue: \(word))")
    }
  }
  let frame = FramedHandler.frame(body)
  fuzzCheck(
    frame.count == body.count + 4 && SPWire.word(in: frame, at: 0) == UInt32(body.count)
      && Array(frame.dropFirst(4)) == body,
    "FramedHandler.frame of \(body.count) bytes")
}

/// `InboundBuffer`, the buffer every handler parses in place, against an
/// array and a reader index: appends (repeated, to pass its 4 KiB
/// compaction point), reads, skips, peeks at any offset, and clears.
private func checkInboundBuffer(_ bytes: [UInt8]) {
  var input = FuzzInput(bytes)
  var buffer = InboundBuffer()
  var model: [UInt8] = []
  var reader = 0
  var operations = 0
  while !input.isExhausted && operations < 64 {
    operations += 1
    let readable = model.count - reader
    switch input.int(in: 0...7) {
    case 0:
      // Up to 16 KiB in all: past the 4 KiB compaction point a few times.
      let chunk = input.blob(maximum: 64)
      for _ in 0..<input.int(in: 1...80) where model.count < 16 * 1024 {
        buffer.append(chunk)
        model += chunk
      }
    case 1:
      let count = input.int(in: -1...300)
      let read = buffer.readBytes(count)
      if count >= 0 && count <= readable {
        fuzzCheck(read == Array(model[reader..<(reader + count)]), "readBytes(\(count))")
        reader += count
      } else {
        fuzzCheck(read == nil, "readBytes(\(count)) of \(readable) readable")
      }
    case 2:
      let count = input.int(in: 0...300)
      if count <= readable {
        buffer.moveReaderIndex(forwardBy: count)
        reader += count
      }
    case 3:
      let offset = input.int(in: -2...300)
      let expected: UInt64? =
        offset >= 0 && readable - offset >= 8
        ? model[(reader + offset)..<(reader + offset + 8)].reduce(0) { $0 << 8 | UInt64($1) } : nil
      fuzzCheck(buffer.peekBigEndian(UInt64.self, at: offset) == expected, "peek UInt64 at \(offset)")
      let expected32: UInt32? =
        offset >= 0 && readable - offset >= 4
        ? model[(reader + offset)..<(reader + offset + 4)].reduce(0) { $0 << 8 | UInt32($1) } : nil
      fuzzCheck(buffer.peekBigEndian(UInt32.self, at: offset) == expected32, "peek UInt32 at \(offset)")
      if offset >= 0 && offset < readable {
        fuzzCheck(buffer[offset] == model[reader + offset], "byte at \(offset)")
      }
    case 4:
      fuzzCheck(buffer.readAll() == Array(model[reader...]), "readAll")
      reader = model.count
    case 5:
      buffer.removeAll()
      model = []
      reader = 0
    default:
      let seen = buffer.withUnsafeReadableBytes { Array($0) }
      fuzzCheck(seen == Array(model[reader...]), "the readable bytes")
    }
    fuzzCheck(
      buffer.readableBytes == model.count - reader && buffer.isEmpty == (reader == model.count),
      "readable \(buffer.readableBytes), expected \(model.count - reader)")
  }
}
