import TestSupport
import Testing

@testable import Examples

/// `CatFormat.render` against what nngcat 1.5.2 printed: every expected
/// value below was observed from nngcat 1.5.2, run as
/// `nngcat --pull0 --listen URL --format F -C 2` fed by
/// `nngcat --push0 --dial URL -F FILE` (the message, then an empty one),
/// its stdout read with `od`.
@Suite("userproto cat: nngcat's print formats", .timeLimit(.minutes(2)), .testThreads)
struct CatFormatTests {
  /// `a"b\` TAB LF CR 0x01 0x7F 0xFF `~ z`.
  static let tricky: [UInt8] = [
    0x61, 0x22, 0x62, 0x5C, 0x09, 0x0A, 0x0D, 0x01, 0x7F, 0xFF, 0x7E, 0x20, 0x7A,
  ]

  private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

  @Test("ascii: printable ASCII as is, the rest as '.', no separator")
  func ascii() {
    #expect(CatFormat.ascii.render(Self.tricky) == bytes(#"a"b\......~ z"#))
    #expect(CatFormat.ascii.render([]) == [])
    // Observed: "x\x80y\x1f " printed as `x.y. ` (0x80 and up are not
    // printable: nngcat passes a signed char to isprint).
    #expect(CatFormat.ascii.render([0x78, 0x80, 0x79, 0x1F, 0x20]) == bytes("x.y. "))
  }

  @Test("quoted: C escapes for \\n \\r \\t \\\" \\\\, \\xNN for the rest, in quotes, a newline")
  func quoted() {
    #expect(CatFormat.quoted.render(Self.tricky) == bytes(#""a\"b\\\t\n\r\x01\x7f\xff~ z""# + "\n"))
    #expect(CatFormat.quoted.render([]) == bytes("\"\"\n"))
    // Observed with NUL and 0x80 too (the interop tests' message).
    let withNul: [UInt8] = [0x61, 0x22, 0x62, 0x5C, 0x09, 0x0A, 0x0D, 0x00, 0x01, 0x7F, 0x80, 0xFF, 0x7E, 0x20, 0x7A]
    #expect(CatFormat.quoted.render(withNul) == bytes(#""a\"b\\\t\n\r\x00\x01\x7f\x80\xff~ z""# + "\n"))
  }

  @Test("hex: every byte as \\xNN (lowercase), in quotes, a newline")
  func hex() {
    let expected = #""\x61\x22\x62\x5c\x09\x0a\x0d\x01\x7f\xff\x7e\x20\x7a""# + "\n"
    #expect(CatFormat.hex.render(Self.tricky) == bytes(expected))
    #expect(CatFormat.hex.render([]) == bytes("\"\"\n"))
  }

  @Test("msgpack: a bin 8, 16 or 32 header, then the bytes")
  func msgpack() {
    #expect(CatFormat.msgpack.render(Self.tricky) == [0xC4, 0x0D] + Self.tricky)
    #expect(CatFormat.msgpack.render([]) == [0xC4, 0x00])
    // Observed: 300 bytes of "a" began c5 01 2c; 70000 of "b" began
    // c6 00 01 11 70.
    let medium = [UInt8](repeating: 0x61, count: 300)
    #expect(CatFormat.msgpack.render(medium) == [0xC5, 0x01, 0x2C] + medium)
    let large = [UInt8](repeating: 0x62, count: 70000)
    #expect(CatFormat.msgpack.render(large) == [0xC6, 0x00, 0x01, 0x11, 0x70] + large)
    // The boundaries (from nngcat.c: < 256 and < 65536).
    #expect(CatFormat.msgpack.render([UInt8](repeating: 0, count: 255)).prefix(2) == [0xC4, 0xFF])
    #expect(CatFormat.msgpack.render([UInt8](repeating: 0, count: 256)).prefix(3) == [0xC5, 0x01, 0x00])
    #expect(CatFormat.msgpack.render([UInt8](repeating: 0, count: 65536)).prefix(5) == [0xC6, 0x00, 0x01, 0x00, 0x00])
  }

  @Test("raw: the bytes; no: nothing")
  func rawAndNo() {
    #expect(CatFormat.raw.render(Self.tricky) == Self.tricky)
    #expect(CatFormat.raw.render([]) == [])
    #expect(CatFormat.no.render(Self.tricky) == [])
  }

  @Test("every byte value, quoted: printable ASCII bar \" and \\ as is, the rest escaped")
  func everyByteQuoted() {
    for byte in UInt8.min...UInt8.max {
      let out = CatFormat.quoted.render([byte])
      let inner = Array(out.dropFirst().dropLast(2))
      switch byte {
      case 0x09: #expect(inner == bytes(#"\t"#))
      case 0x0A: #expect(inner == bytes(#"\n"#))
      case 0x0D: #expect(inner == bytes(#"\r"#))
      case 0x22: #expect(inner == bytes(#"\""#))
      case 0x5C: #expect(inner == bytes(#"\\"#))
      case 0x20...0x7E: #expect(inner == [byte])
      default: #expect(inner == CatFormat.hexEscape(byte), "\(byte)")
      }
    }
  }
}
