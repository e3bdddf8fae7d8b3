// Interrupt controllers: the local x2APIC (MSRs only, no MMIO page to map) and the
// IOAPIC (MMIO, in the uncached GiB below 4 GiB). On PVM every MSR access here traps to
// the host (~4 us), so nothing touches them on a hot path except the EOI.

enum Vector {
    static let timer: UInt8 = 0x20        // irq_entry counts it as a tick (percpu.h)
    static let wake: UInt8 = 0x21         // IPI: look at the mailbox
    static let ioapicBase: UInt8 = 0x30   // + GSI
    static let spurious: UInt8 = 0xFF
}

@_extern(c, "pvos_read32") func read32(_ address: UInt64) -> UInt32
@_extern(c, "pvos_write32") func write32(_ address: UInt64, _ value: UInt32)
@_extern(c, "pvos_write64") func write64(_ address: UInt64, _ value: UInt64)

enum APIC {
    static let msrBase: UInt32 = 0x1B, msrID: UInt32 = 0x802, msrSVR: UInt32 = 0x80F
    static let msrICR: UInt32 = 0x830, msrLVTTimer: UInt32 = 0x832, msrLVT0: UInt32 = 0x835
    static let msrLVT1: UInt32 = 0x836, msrLVTError: UInt32 = 0x837
    static let msrInitialCount: UInt32 = 0x838, msrCurrentCount: UInt32 = 0x839, msrDivide: UInt32 = 0x83E
    static let masked: UInt64 = 1 << 16

    static var on = false                 // the BSP's x2APIC works: interrupt-driven mode
    static var bspID: UInt32 = 0
    static var busKHz: UInt64 = 0         // measured timer input clock / 16

    /// x2APIC mode, software-enabled, LINT0/LINT1/error masked (KVM leaves the BSP's
    /// LINT0 in ExtINT mode, and an unprogrammed PIC behind it would inject vector 4+n).
    /// False if any MSR faults: then the CPU has no usable x2APIC.
    static func enableLocal() -> Bool {
        var base: UInt64 = 0
        guard rdmsrSafe(msrBase, &base) == 1, base & (1 << 11) != 0 else { return false }
        if base & 0xC00 != 0xC00 && wrmsrSafe(msrBase, base | 0xC00) != 1 { return false }
        guard wrmsrSafe(msrSVR, 0x100 | UInt64(Vector.spurious)) == 1 else { return false }
        _ = wrmsrSafe(msrLVT0, masked)
        _ = wrmsrSafe(msrLVT1, masked)
        _ = wrmsrSafe(msrLVTError, masked | 0xFE)
        return true
    }

    static func id() -> UInt32 {
        var v: UInt64 = 0
        _ = rdmsrSafe(msrID, &v)
        return UInt32(truncatingIfNeeded: v)
    }

    /// Measures the timer's count rate against the TSC over ~200 us (for one-shot count
    /// mode; TSC-deadline mode needs none). Each sample brackets
    /// the (trapping) MSR read with two TSC reads and uses their midpoint.
    static func calibrate() -> Bool {
        _ = wrmsrSafe(msrDivide, 0x3)                    // divide by 16
        _ = wrmsrSafe(msrLVTTimer, masked | UInt64(Vector.timer))
        _ = wrmsrSafe(msrInitialCount, 0xFFFF_FFFF)
        let (t0, c0) = sample()
        while rdtsc() &- t0 < Platform.tscKHz / 5 { cpuPause() }
        let (t1, c1) = sample()
        _ = wrmsrSafe(msrInitialCount, 0)
        let counts = UInt64(c0 &- c1), cycles = t1 &- t0
        guard c0 > c1, cycles > 0 else { return false }
        busKHz = counts * Platform.tscKHz / cycles
        // At least 100 kHz (10 us resolution), and a count per ms that fits in 32 bits.
        return busKHz >= 100 && busKHz <= 0xFFFF_FFFF
    }

    private static func sample() -> (UInt64, UInt32) {
        let a = rdtsc()
        var count: UInt64 = 0
        _ = rdmsrSafe(msrCurrentCount, &count)
        let b = rdtsc()
        return (a &+ (b &- a) / 2, UInt32(truncatingIfNeeded: count))
    }

    /// ICR: fixed = 0, INIT = 5, start-up = 6 (delivery mode << 8); level "assert".
    static func send(to apic: UInt32, mode: UInt64, vector: UInt8) {
        _ = wrmsrSafe(msrICR, UInt64(apic) << 32 | 1 << 14 | mode << 8 | UInt64(vector))
    }
}

/// IOAPICs from the MADT: IOREGSEL at +0, IOWIN at +0x10. Redirection entry n is
/// registers 0x10 + 2n (low: vector, polarity bit 13, level bit 15, mask bit 16) and
/// 0x11 + 2n (destination APIC id in bits 24-31).
enum IOAPIC {
    static var pins: [Int] = []           // inputs per MADT IOAPIC

    static func read(_ base: UInt64, _ reg: UInt32) -> UInt32 {
        write32(base, reg)
        return read32(base + 0x10)
    }

    static func write(_ base: UInt64, _ reg: UInt32, _ value: UInt32) {
        write32(base, reg)
        write32(base + 0x10, value)
    }

    /// Reads each IOAPIC's size. Every input is masked at reset and no firmware ran
    /// before pvos, so nothing is masked again: each access is an exit (~90 us to
    /// QEMU's userspace IOAPIC; 24 pins would cost ~4 ms of boot). False if none.
    static func initialize() -> Bool {
        for io in ACPI.ioapics {
            mapUncached(io.address)
            pins.append(Int((read(io.address, 1) >> 16) & 0xFF) + 1)
        }
        return !pins.isEmpty
    }

    /// Routes ISA `irq` (after the MADT's overrides) to vector 0x30 + GSI on CPU `apic`,
    /// edge/high unless an override says otherwise. Returns false if no IOAPIC has it.
    static func routeISA(_ irq: UInt8, to apic: UInt32) -> Bool { routedGSI(irq, to: apic) != nil }

    /// `routeISA`, returning the GSI the IRQ arrived at (its vector is 0x30 + GSI).
    static func routedGSI(_ irq: UInt8, to apic: UInt32) -> UInt32? {
        var gsi = UInt32(irq)
        var flags: UInt16 = 0
        for o in ACPI.overrides where o.irq == irq { gsi = o.gsi; flags = o.flags }
        guard apic <= 0xFF, gsi < UInt32(0xF0 - Vector.ioapicBase) else { return nil }
        for (i, io) in ACPI.ioapics.enumerated() where gsi >= io.gsiBase && gsi - io.gsiBase < UInt32(pins[i]) {
            let pin = gsi - io.gsiBase
            var low = UInt32(Vector.ioapicBase) + gsi
            if flags & 3 == 3 { low |= 1 << 13 }           // active low
            if (flags >> 2) & 3 == 3 { low |= 1 << 15 }    // level triggered
            write(io.address, 0x11 + 2 * pin, apic << 24)
            write(io.address, 0x10 + 2 * pin, low)
            return gsi
        }
        return nil
    }
}
