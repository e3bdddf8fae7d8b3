// Tickless timer: each CPU's LAPIC timer is one-shot, armed only for the earliest
// deadline that code on that CPU asked for, so a CPU with nothing due takes no timer
// interrupt at all (a tick to a halted vCPU costs the host ~90 us; 100 idle VMs at
// 100 Hz were 93% of a core). TSC-deadline mode (IA32_TSC_DEADLINE, MSR 0x6E0) where the
// LAPIC has it, else one-shot count mode at the calibrated rate.
//
// The deadline API, for anything that waits with a timeout (virtio waits, the network
// stack's timer list, `sleep`): `Timer.wake(cpu, at: tsc)` before sleeping in
// `Platform.idle`. Deadlines are TSC values (`Timer.after(ns:)`); a CPU keeps one armed
// deadline (CPU.deadline, cleared by irq_entry when the interrupt comes), so asking for a
// later time than the armed one costs nothing: every waiter re-asks around its loop, and
// the earliest one always wins. Each MSR write traps (~13 us), hence the lazy re-arming.

enum Timer {
    static let msrTSCDeadline: UInt32 = 0x6E0
    /// LVT timer mode field (bits 17-18): 0 one-shot, 1 periodic, 2 TSC-deadline.
    static let modeTSCDeadline: UInt64 = 2 << 17
    /// Count mode: the longest programmable wait, re-armed when it fires early.
    static let maxWaitNs: UInt64 = 60_000_000_000

    static var tscDeadline = false

    static var modeName: StaticString { tscDeadline ? "tsc-deadline" : "one-shot" }

    /// On the BSP, before `APIC.calibrate()`: does the LAPIC take TSC-deadline mode?
    /// CPUID describes the outer host on PVM, so the LVT is written and read back (KVM
    /// masks the mode bit when the VMM did not give the vCPU the feature).
    static func detectTSCDeadline() -> Bool {
        // `notscdeadline` on the command line forces count mode (tests use it).
        guard cpuid(1).ecx & (1 << 24) != 0, !words(Kernel.cmdline).contains(where: { matches($0, "notscdeadline") }) else {
            return false
        }
        let lvt = modeTSCDeadline | APIC.masked | UInt64(Vector.timer)
        var back: UInt64 = 0
        guard wrmsrSafe(APIC.msrLVTTimer, lvt) == 1, rdmsrSafe(APIC.msrLVTTimer, &back) == 1,
              back & (3 << 17) == modeTSCDeadline, wrmsrSafe(msrTSCDeadline, 0) == 1 else {
            _ = wrmsrSafe(APIC.msrLVTTimer, APIC.masked | UInt64(Vector.timer))
            return false
        }
        tscDeadline = true
        return true
    }

    /// This CPU's timer in its one-shot mode, disarmed (BSP and every AP).
    static func initializeCPU(_ cpu: CPU) {
        cpu.setField(CPU.deadline, 0)
        if tscDeadline {
            _ = wrmsrSafe(APIC.msrLVTTimer, modeTSCDeadline | UInt64(Vector.timer))
            _ = wrmsrSafe(msrTSCDeadline, 0)
        } else {
            _ = wrmsrSafe(APIC.msrDivide, 0x3)                     // divide by 16
            _ = wrmsrSafe(APIC.msrLVTTimer, UInt64(Vector.timer))  // one-shot
            _ = wrmsrSafe(APIC.msrInitialCount, 0)
        }
    }

    /// The TSC value `ns` from now.
    static func after(ns: UInt64) -> UInt64 {
        rdtsc() &+ ns / 1_000_000 * Platform.tscKHz + ns % 1_000_000 * Platform.tscKHz / 1_000_000
    }

    static func after(ms: UInt64) -> UInt64 { rdtsc() &+ ms * Platform.tscKHz }

    /// The TSC value when `Clock.nanoseconds()` reaches `ns` (now if that has passed):
    /// for deadlines kept in uptime nanoseconds, such as a timer list's earliest entry
    /// (`Platform.idle(cpu, until: Timer.tsc(atUptime: next))`).
    static func tsc(atUptime ns: UInt64) -> UInt64 {
        let now = Clock.nanoseconds()
        return after(ns: ns > now ? ns - now : 0)
    }

    /// Makes `cpu` (the running CPU) take a timer interrupt no later than TSC `tsc`
    /// (at once if that has passed). Cheap unless it moves the armed deadline earlier.
    /// Call it with the interrupt flag clear (Platform.idle does), so the interrupt for
    /// the old deadline cannot race the field update.
    static func wake(_ cpu: CPU, at tsc: UInt64) {
        guard APIC.on, tsc != 0 else { return }
        let armed = cpu.field(CPU.deadline)
        if armed != 0 && armed <= tsc { return }
        cpu.setField(CPU.deadline, tsc)
        if tscDeadline {
            _ = wrmsrSafe(msrTSCDeadline, tsc)
            return
        }
        let now = rdtsc()
        var ns = tsc > now ? Clock.tscNanoseconds(tsc - now) : 0
        ns = min(ns, maxWaitNs)
        // busKHz counts per ms = counts per 1e6 ns; at least 1 (0 would disarm). The
        // calibration reads up to ~0.2% low (62,4xx of KVM's 62,500 kHz): 1/512 more
        // makes the interrupt come just after the deadline, not just before it (which
        // costs a second interrupt and MSR write to re-arm for the rest).
        let exact = ns * APIC.busKHz / 1_000_000
        let count = max(exact + exact / 512, 1)
        _ = wrmsrSafe(APIC.msrInitialCount, min(count, 0xFFFF_FFFF))
    }

    /// Sleeps on the running CPU until TSC `tsc`; other interrupts wake it, it sleeps
    /// again. Without a LAPIC it pauses.
    static func sleep(until tsc: UInt64) {
        let cpu = SMP.current()
        while rdtsc() < tsc {
            Platform.idle(cpu, until: tsc) { rdtsc() >= tsc }
        }
    }

    /// `sleep MS`: every online CPU sleeps MS ms at once (a mailbox command); each
    /// reports the time it measured, so a test sees every CPU's timer work.
    static func sleepCommand(_ args: ArraySlice<[UInt8]>) {
        guard let a = args.first, let ms = Virtio.parseNumber(a[...]), ms >= 1, ms <= 600_000 else {
            Console.write("usage: sleep MS (1-600000)\n")
            return
        }
        SMP.runEverywhere(SMP.commandSleep, ms)
        for i in 0..<SMP.count where SMP.cpu(i).isOnline {
            Console.write("cpu ")
            Console.writeDecimal(UInt64(i))
            Console.write(": slept ")
            Console.writeMilli(SMP.cpu(i).field(CPU.result) / 1000)
            Console.write(" ms\n")
        }
    }

    /// The mailbox side of `sleep`: ns slept into CPU.result.
    static func performSleep(_ cpu: CPU, ms: UInt64) {
        let t0 = Clock.nanoseconds()
        sleep(until: after(ms: ms))
        cpu.setField(CPU.result, Clock.nanoseconds() - t0)
    }
}
