import GuestMemory

/// The IRQ probe's guest-written mailbox (`--irq-probe`, VMM/IRQProbe.swift): two 32-bit
/// registers, low at 0x08 and high at 0x0C, hold a guest-physical address where the probe
/// stores a u64 timestamp. The address is the guest's to choose, so the store goes through
/// GuestMemory's checks: an address outside RAM (or straddling a hole) stores nothing.
public struct ProbeMailbox: Sendable {
    public static let lowOffset: UInt64 = 0x08
    public static let highOffset: UInt64 = 0x0C

    public private(set) var address: UInt64 = 0

    public init() {}

    /// A guest write at `offset` of the probe's window; other offsets are not the mailbox's.
    public mutating func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        let v = data.littleEndianValue
        switch offset {
        case Self.lowOffset: address = (address & ~0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
        case Self.highOffset: address = (address & 0xFFFF_FFFF) | ((v & 0xFFFF_FFFF) << 32)
        default: break
        }
    }

    /// Stores `value` at the mailbox. Returns whether it landed in guest RAM.
    @discardableResult
    public func store(_ value: UInt64, in memory: GuestMemory) -> Bool {
        (try? memory.write(value, at: address)) != nil
    }
}
