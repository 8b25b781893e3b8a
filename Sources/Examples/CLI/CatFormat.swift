/// How `userproto cat` prints a received message: nngcat 1.5.2's
/// `--format` values, byte for byte (its `printmsg`).
enum CatFormat: String, Sendable, Hashable, CaseIterable {
  /// `no`: nothing.
  case no
  /// `ascii`: printable ASCII (0x20...0x7E) as is, every other byte as `.`;
  /// no separator between messages.
  case ascii
  /// `hex`: every byte as `\xNN` (lowercase), in double quotes, then a
  /// newline.
  case hex
  /// `msgpack`: a MessagePack bin 8/16/32 header (`0xC4 len`, `0xC5`
  /// two-byte length, `0xC6` four-byte length, big-endian), then the bytes.
  case msgpack
  /// `quoted`: in double quotes, `\n` `\r` `\t` `\"` `\\` escaped, other
  /// printable ASCII as is, every other byte as `\xNN`; then a newline.
  case quoted
  /// `raw`: the bytes as they are.
  case raw

  /// The bytes to write on stdout for `message`.
  func render(_ message: [UInt8]) -> [UInt8] {
    switch self {
    case .no:
      return []
    case .raw:
      return message
    case .ascii:
      return message.map { Self.isPrintable($0) ? $0 : UInt8(ascii: ".") }
    case .quoted:
      var out: [UInt8] = [UInt8(ascii: "\"")]
      out.reserveCapacity(message.count + 3)
      for byte in message {
        switch byte {
        case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
        case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
        case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), byte]
        default: if Self.isPrintable(byte) { out.append(byte) } else { out += Self.hexEscape(byte) }
        }
      }
      out += [UInt8(ascii: "\""), UInt8(ascii: "\n")]
      return out
    case .hex:
      var out: [UInt8] = [UInt8(ascii: "\"")]
      out.reserveCapacity(message.count * 4 + 3)
      for byte in message { out += Self.hexEscape(byte) }
      out += [UInt8(ascii: "\""), UInt8(ascii: "\n")]
      return out
    case .msgpack:
      let n = message.count
      let header: [UInt8] =
        if n < 256 {
          [0xC4, UInt8(n)]
        } else if n < 65536 {
          [0xC5, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
          [0xC6, UInt8((n >> 24) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        }
      return header + message
    }
  }

  /// C's `isprint` in the C locale (nngcat passes a signed `char`, so bytes
  /// from 0x80 up are not printable either).
  static func isPrintable(_ byte: UInt8) -> Bool { (0x20...0x7E).contains(byte) }

  /// `\xNN`, lowercase, as `printf("\\x%02x")`.
  static func hexEscape(_ byte: UInt8) -> [UInt8] {
    let digits = Array("0123456789abcdef".utf8)
    return [UInt8(ascii: "\\"), UInt8(ascii: "x"), digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]]
  }
}
