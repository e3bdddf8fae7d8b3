/// pvmm's console escape keys on a terminal, as QEMU's: Ctrl-A, then a key. A pure state
/// machine over the bytes typed, so the terminal code only acts on what it returns.
public struct ConsoleEscape: Sendable {
    public static let prefix: UInt8 = 0x01   // Ctrl-A

    public enum Action: Equatable, Sendable {
        /// Nothing for the guest (the prefix, waiting for its key).
        case none
        /// One byte for the guest (an ordinary key, or Ctrl-A Ctrl-A).
        case send(UInt8)
        /// Ctrl-A and then a key it does not bind: both go to the guest.
        case sendPrefixAnd(UInt8)
        /// Ctrl-A x: stop the VM.
        case stop
        /// Ctrl-A h: show `help`.
        case help
    }

    /// What Ctrl-A h prints (raw mode keeps output post-processing: LF becomes CR LF).
    public static let help = "\npvmm escape keys (Ctrl-A, then):\n"
        + "  x       stop the VM and exit pvmm\n"
        + "  h       show this help\n"
        + "  Ctrl-A  send Ctrl-A to the guest\n"

    var sawPrefix = false

    public init() {}

    public mutating func feed(_ byte: UInt8) -> Action {
        guard sawPrefix else {
            if byte == Self.prefix { sawPrefix = true; return .none }
            return .send(byte)
        }
        sawPrefix = false
        switch byte {
        case UInt8(ascii: "x"), UInt8(ascii: "X"): return .stop
        case UInt8(ascii: "h"), UInt8(ascii: "H"): return .help
        case Self.prefix: return .send(Self.prefix)
        default: return .sendPrefixAnd(byte)
        }
    }
}
