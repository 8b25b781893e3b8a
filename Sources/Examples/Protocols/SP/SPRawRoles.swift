import Synchronization
public import UserProto

/// The raw mode of one SP protocol, as a type: the parameter of
/// ``SPRawHandler`` (`SPRawHandler<SPRaw.Rep0>` is ``RawRep0Handler``).
///
/// Being a type, the role fixes at compile time what differs between raw
/// sockets in the socket layer's static properties (whether the socket
/// sends at all, what a send must start with), and lets ``SPDevice`` take
/// only raw sockets.
public protocol SPRawRole: SendableMetatype {
  /// The protocol the raw socket speaks: sent in its SP header; the only
  /// one accepted from peers is its ``SPProtocolID/peer``.
  static var protocolID: SPProtocolID { get }
}

/// The raw roles, one per SP pattern: NNG's `nng_<protocol>_open_raw`.
public enum SPRaw {
  /// Raw REQ v0 (NNG's xreq0).
  public enum Req0: SPRawRole {
    /// REQ v0.
    public static var protocolID: SPProtocolID { .req0 }
  }
  /// Raw REP v0 (NNG's xrep0).
  public enum Rep0: SPRawRole {
    /// REP v0.
    public static var protocolID: SPProtocolID { .rep0 }
  }
  /// Raw PUB v0 (NNG's pub0 opened raw).
  public enum Pub0: SPRawRole {
    /// PUB v0.
    public static var protocolID: SPProtocolID { .pub0 }
  }
  /// Raw SUB v0 (NNG's xsub0): no subscriptions, every message delivered.
  public enum Sub0: SPRawRole {
    /// SUB v0.
    public static var protocolID: SPProtocolID { .sub0 }
  }
  /// Raw PUSH v0 (NNG's push0 opened raw).
  public enum Push0: SPRawRole {
    /// PUSH v0.
    public static var protocolID: SPProtocolID { .push0 }
  }
  /// Raw PULL v0 (NNG's pull0 opened raw).
  public enum Pull0: SPRawRole {
    /// PULL v0.
    public static var protocolID: SPProtocolID { .pull0 }
  }
  /// Raw PAIR v0 (NNG's pair0 opened raw).
  public enum Pair0: SPRawRole {
    /// PAIR v0.
    public static var protocolID: SPProtocolID { .pair0 }
  }
  /// Raw PAIR v1 (NNG's pair1 opened raw): the hop count is the header.
  public enum Pair1: SPRawRole {
    /// PAIR v1.
    public static var protocolID: SPProtocolID { .pair1 }
  }
  /// Raw SURVEYOR v0 (NNG's xsurveyor0).
  public enum Surveyor0: SPRawRole {
    /// SURVEYOR v0.
    public static var protocolID: SPProtocolID { .surveyor0 }
  }
  /// Raw RESPONDENT v0 (NNG's xrespondent0).
  public enum Respondent0: SPRawRole {
    /// RESPONDENT v0.
    public static var protocolID: SPProtocolID { .respondent0 }
  }
  /// Raw BUS v0 (NNG's bus0 opened raw).
  public enum Bus0: SPRawRole {
    /// BUS v0.
    public static var protocolID: SPProtocolID { .bus0 }
  }
}

/// A raw REQ v0 handler: requests sent as given (header included), no id, no resend; every reply delivered.
public typealias RawReq0Handler = SPRawHandler<SPRaw.Req0>
/// A raw REP v0 handler: requests delivered behind the receiving pipe's id; replies routed by it.
public typealias RawRep0Handler = SPRawHandler<SPRaw.Rep0>
/// A raw PUB v0 handler (as the cooked one: PUB has no header).
public typealias RawPub0Handler = SPRawHandler<SPRaw.Pub0>
/// A raw SUB v0 handler: every message delivered, unfiltered.
public typealias RawSub0Handler = SPRawHandler<SPRaw.Sub0>
/// A raw PUSH v0 handler (as the cooked one: PUSH has no header).
public typealias RawPush0Handler = SPRawHandler<SPRaw.Push0>
/// A raw PULL v0 handler (as the cooked one: PULL has no header).
public typealias RawPull0Handler = SPRawHandler<SPRaw.Pull0>
/// A raw PAIR v0 handler (as the cooked one: PAIR v0 has no header).
public typealias RawPair0Handler = SPRawHandler<SPRaw.Pair0>
/// A raw PAIR v1 handler: the hop count delivered and sent as the header.
public typealias RawPair1Handler = SPRawHandler<SPRaw.Pair1>
/// A raw SURVEYOR v0 handler: surveys sent as given to every respondent; every answer delivered.
public typealias RawSurveyor0Handler = SPRawHandler<SPRaw.Surveyor0>
/// A raw RESPONDENT v0 handler: surveys delivered behind the receiving pipe's id; answers routed by it.
public typealias RawRespondent0Handler = SPRawHandler<SPRaw.Respondent0>
/// A raw BUS v0 handler: messages delivered behind their pipe's id; a send skips the pipe its id names.
public typealias RawBus0Handler = SPRawHandler<SPRaw.Bus0>

/// A raw REQ v0 socket: `Socket<RawReq0Handler>`.
public typealias RawReq0Socket = Socket<RawReq0Handler>
/// A raw REP v0 socket: `Socket<RawRep0Handler>`.
public typealias RawRep0Socket = Socket<RawRep0Handler>
/// A raw PUB v0 socket: `Socket<RawPub0Handler>`.
public typealias RawPub0Socket = Socket<RawPub0Handler>
/// A raw SUB v0 socket: `Socket<RawSub0Handler>`.
public typealias RawSub0Socket = Socket<RawSub0Handler>
/// A raw PUSH v0 socket: `Socket<RawPush0Handler>`.
public typealias RawPush0Socket = Socket<RawPush0Handler>
/// A raw PULL v0 socket: `Socket<RawPull0Handler>`.
public typealias RawPull0Socket = Socket<RawPull0Handler>
/// A raw PAIR v0 socket: `Socket<RawPair0Handler>`.
public typealias RawPair0Socket = Socket<RawPair0Handler>
/// A raw PAIR v1 socket: `Socket<RawPair1Handler>`.
public typealias RawPair1Socket = Socket<RawPair1Handler>
/// A raw SURVEYOR v0 socket: `Socket<RawSurveyor0Handler>`.
public typealias RawSurveyor0Socket = Socket<RawSurveyor0Handler>
/// A raw RESPONDENT v0 socket: `Socket<RawRespondent0Handler>`.
public typealias RawRespondent0Socket = Socket<RawRespondent0Handler>
/// A raw BUS v0 socket: `Socket<RawBus0Handler>`.
public typealias RawBus0Socket = Socket<RawBus0Handler>

extension SPProtocolID {
  /// Whether a socket of this protocol sends messages (SUB and PULL do not).
  var canSend: Bool { self != .sub0 && self != .pull0 }
  /// Whether it receives messages (PUB and PUSH do not).
  var canReceive: Bool { self != .pub0 && self != .push0 }
  /// PAIR v0 or v1: one peer at a time.
  var isPair: Bool { self == .pair0 || self == .pair1 }
}

/// The 31-bit pipe ids raw sockets put in headers, unique in the process
/// (as NNG's pipe ids are) until 2^31 were handed out, so a raw BUS device
/// never mistakes the other socket's sender for one of its own pipes.
enum SPPipeIDs {
  private static let next = Atomic<UInt32>(UInt32.random(in: 1...SPMessage.largestPipeID))

  /// A fresh id, 1 to 0x7fffffff (a random start, then one by one).
  static func make() -> UInt32 {
    while true {
      let id = next.wrappingAdd(1, ordering: .relaxed).oldValue & SPMessage.largestPipeID
      if id != 0 { return id }
    }
  }
}
