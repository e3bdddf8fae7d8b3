// Monotonic time: kvmclock (a pvclock_vcpu_time_info per CPU, in its per-CPU page)
// when the host has it, else the TSC at its known rate. On PVM, CPUID reports the outer
// host, so the MSR is simply tried (a #GP is fixed up); elsewhere a KVM CPUID leaf that
// denies CLOCKSOURCE2 is believed.

@_extern(c, "pvos_pvclock_ns") func pvclockNanoseconds(_ area: UInt64) -> UInt64

enum Clock {
    static let msrSystemTime: UInt32 = 0x4B56_4D01   // MSR_KVM_SYSTEM_TIME_NEW
    static var kvmclock = false
    static var startNS: UInt64 = 0       // kvmclock when initialize() ran
    static var startOffset: UInt64 = 0   // ns from the first instruction to then

    static var name: StaticString { kvmclock ? "kvmclock" : "tsc" }

    /// On the BSP: registers its area if the host may have kvmclock.
    static func initialize() {
        guard mayHaveKVMClock(), register(SMP.bsp) else { return }
        let t = rdtsc()
        startNS = pvclockNanoseconds(SMP.bsp.clockArea)
        startOffset = tscNanoseconds(t &- bootTSC())
        kvmclock = true
    }

    /// Registers `cpu`'s area (on that CPU). The host fills it before the guest resumes;
    /// an odd version or a zero multiplier means it did not, so the MSR is turned off.
    @discardableResult
    static func register(_ cpu: CPU) -> Bool {
        let area = cpu.clockArea
        for i in 0..<4 { write64(area + UInt64(8 * i), 0) }
        guard wrmsrSafe(msrSystemTime, area | 1) == 1 else { return false }
        if read32(area) & 1 != 0 || read32(area + 24) == 0 {
            _ = wrmsrSafe(msrSystemTime, 0)
            return false
        }
        return true
    }

    private static func mayHaveKVMClock() -> Bool {
        guard Platform.kind == .hardware, cpuid(1).ecx & (1 << 31) != 0 else { return true }
        let leaf = cpuid(0x4000_0000)
        // "KVMKVMKVM\0\0\0"
        guard leaf.ebx == 0x4B4D_564B, leaf.ecx == 0x564B_4D56, leaf.edx == 0x4D,
              leaf.eax >= 0x4000_0001, leaf.eax < 0x4000_0100 else { return true }
        return cpuid(0x4000_0001).eax & (1 << 3) != 0
    }

    static func tscNanoseconds(_ cycles: UInt64) -> UInt64 {
        let k = Platform.tscKHz
        return cycles / k * 1_000_000 + cycles % k * 1_000_000 / k
    }

    /// Nanoseconds since the kernel's first instruction.
    static func nanoseconds() -> UInt64 {
        guard kvmclock else { return tscNanoseconds(rdtsc() &- bootTSC()) }
        var area = SMP.current().clockArea
        if read32(area + 24) == 0 { area = SMP.bsp.clockArea }   // that CPU has none
        let now = pvclockNanoseconds(area)
        return now > startNS ? now - startNS + startOffset : startOffset   // never before boot
    }
}
