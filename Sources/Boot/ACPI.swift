import GuestMemory
import PVMMABI

/// The ACPI tables pvmm gives a guest, as Firecracker and Cloud Hypervisor do: RSDP ->
/// XSDT -> {FADT (hardware-reduced) -> DSDT, MADT}. Built as bytes at a fixed guest
/// address (BootLayout.acpi, below 1 MiB) so the guest finds them through
/// `hvm_start_info.rsdp_paddr`. ACPI 6.5 layouts (sections 5.2.5 to 5.2.12).
public struct ACPITables: Sendable, Equatable {
    /// Guest-physical address of the first byte (the RSDP).
    public let base: UInt64
    public let bytes: [UInt8]
    public var rsdp: UInt64 { base }

    /// Where the local APIC and the IOAPIC live (the x86 defaults; KVM's in-kernel irqchip
    /// decodes them there).
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000
    public static let ioAPICPins = 24

    /// An ISA IRQ routed to a different IOAPIC input (MADT type 2).
    public struct Override: Sendable, Equatable {
        public let irq: UInt8
        public let gsi: UInt32
        public let flags: UInt16
        public init(irq: UInt8, gsi: UInt32, flags: UInt16 = 0) { self.irq = irq; self.gsi = gsi; self.flags = flags }
    }

    /// The PC convention: the timer's IRQ 0 arrives on IOAPIC pin 2.
    public static let defaultOverrides = [Override(irq: 0, gsi: 2)]

    /// Lays out the tables for `cpus` vCPUs (x2APIC ids 0..<cpus). `dsdtBody` is AML to put
    /// in the DSDT (device declarations); empty is a valid DSDT.
    public init(cpus: Int, base: UInt64 = BootLayout.acpi, overrides: [Override] = defaultOverrides, dsdtBody: [UInt8] = []) {
        self.base = base
        let rsdpLength = 36
        let xsdtAt = Self.align(rsdpLength)
        let xsdtLength = 36 + 8 * 2
        let fadtAt = Self.align(xsdtAt + xsdtLength)
        let fadtLength = 276
        let madtAt = Self.align(fadtAt + fadtLength)
        let madt = Self.madt(cpus: cpus, overrides: overrides)
        let dsdtAt = Self.align(madtAt + madt.count)
        let dsdt = Self.table("DSDT", revision: 2, body: dsdtBody)

        var out = [UInt8](repeating: 0, count: dsdtAt + dsdt.count)
        func put(_ t: [UInt8], at o: Int) { out.replaceSubrange(o..<(o + t.count), with: t) }
        put(Self.rsdp(xsdt: base + UInt64(xsdtAt)), at: 0)
        put(Self.table("XSDT", revision: 1, body: Self.le64(base + UInt64(fadtAt)) + Self.le64(base + UInt64(madtAt))), at: xsdtAt)
        put(Self.fadt(dsdt: base + UInt64(dsdtAt)), at: fadtAt)
        put(madt, at: madtAt)
        put(dsdt, at: dsdtAt)
        bytes = out
    }

    /// Copies the tables into guest memory.
    public func write(to mem: GuestMemory) throws(BootError) {
        do { try mem.write(bytes, at: base) } catch { throw .guestMemory(what: "ACPI tables", error) }
    }

    // MARK: Tables

    /// RSDP revision 2 (ACPI 6.5 §5.2.5.3): checksum over the first 20 bytes, extended
    /// checksum over all 36.
    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var r = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le32(0) + le32(36) + le64(xsdt) + [0, 0, 0, 0]
        r[8] = checksum(r[0..<20])
        r[32] = checksum(r[0..<36])
        return r
    }

    /// FADT for a hardware-reduced platform (§5.2.9): no PM blocks, no SCI, no legacy
    /// devices; only the DSDT pointers and the flags matter.
    static func fadt(dsdt: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 276 - 36)
        func set(_ offset: Int, _ v: [UInt8]) { body.replaceSubrange((offset - 36)..<(offset - 36 + v.count), with: v) }
        set(40, le32(UInt32(truncatingIfNeeded: dsdt)))      // DSDT (32-bit)
        set(109, le16(1 << 2 | 1 << 4 | 1 << 5))              // IAPC_BOOT_ARCH: no VGA, no ASPM, no CMOS RTC
        set(112, le32(1 << 20))                               // flags: HW_REDUCED_ACPI
        set(131, [5])                                         // FADT minor version (6.5)
        set(140, le64(dsdt))                                  // X_DSDT
        set(268, Array("PVMMPVMM".utf8))                      // hypervisor vendor identity
        return table("FACP", revision: 6, body: body)
    }

    /// MADT (§5.2.12): local APIC address, no 8259 (flags 0), one IOAPIC, ISA overrides and
    /// one enabled processor per vCPU, which the guest starts with INIT/SIPI: a processor
    /// local APIC structure (type 0) for APIC ids below 255, as §5.2.12.12 requires (a
    /// Linux without CONFIG_X86_X2APIC ignores x2APIC entries, and so its APs), a local
    /// x2APIC structure (type 9) above.
    static func madt(cpus: Int, overrides: [Override]) -> [UInt8] {
        var body = le32(localAPICAddress) + le32(0)
        body += [1, 12, 0, 0] + le32(ioAPICAddress) + le32(0)          // IOAPIC id 0, GSI base 0
        for o in overrides {
            body += [2, 10, 0, o.irq] + le32(o.gsi) + le16(o.flags)   // bus 0 = ISA
        }
        for id in 0..<cpus {
            if id < 255 {
                body += [0, 8, UInt8(id), UInt8(id)] + le32(1)          // UID, APIC id, enabled
            } else {
                body += [9, 16, 0, 0] + le32(UInt32(id)) + le32(1) + le32(UInt32(id))
            }
        }
        return table("APIC", revision: 5, body: body)
    }

    /// A system description table: header (§5.2.6) + body, checksummed.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        let length = UInt32(36 + body.count)
        var t = Array(signature.utf8) + le32(length) + [revision, 0] + oemID
        t += Array("PVMMVM  ".utf8) + le32(1) + Array("PVMM".utf8) + le32(1)
        t += body
        t[9] = checksum(t[...])
        return t
    }

    static let oemID = Array("PVMM  ".utf8)

    /// The byte that makes `bytes` sum to zero (mod 256).
    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    static func align(_ n: Int) -> Int { (n + 15) & ~15 }
    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}
