// Per-CPU pages, application-processor bring-up (INIT, SIPI, SIPI to a real-mode
// trampoline below 1 MiB), spinlocks, and the mailboxes that hand APs work.

@_extern(c, "pvos_cpu_table_addr") func cpuTableAddress() -> UInt64
@_extern(c, "pvos_cpu0_addr") func cpu0Address() -> UInt64
@_extern(c, "pvos_bsp_stacks_low") func bspStacksLow() -> UInt64
@_extern(c, "pvos_bsp_stacks_high") func bspStacksHigh() -> UInt64
@_extern(c, "pvos_rsp") func currentRSP() -> UInt64
@_extern(c, "pvos_read_cr3") func readCR3() -> UInt64
@_extern(c, "pvos_install_trampoline") func installTrampoline(_ page: UInt64, _ cr3: UInt64)
@_extern(c, "pvos_setup_ap_tables") func setupAPTables(_ cpu: UInt64, _ istBase: UInt64)
@_extern(c, "pvos_try_lock") func tryLock(_ word: UInt64, _ value: UInt64) -> Int32
@_extern(c, "pvos_bench_loop") func benchLoop(_ n: UInt64) -> UInt64

/// A CPU's page (percpu.h). Fields other CPUs write or poll go through read64/write64,
/// which the optimizer cannot cache or drop.
struct CPU {
    let base: UInt64
    func field(_ offset: UInt64) -> UInt64 { read64(base + offset) }
    func setField(_ offset: UInt64, _ value: UInt64) { write64(base + offset, value) }

    static let selfPointer: UInt64 = 0x00, index: UInt64 = 0x08, apic: UInt64 = 0x10
    static let ticks: UInt64 = 0x18, irqs: UInt64 = 0x20, online: UInt64 = 0x28
    static let stack: UInt64 = 0x30, deadline: UInt64 = 0x38, vif: UInt64 = 0x40
    static let low: UInt64 = 0x48, high: UInt64 = 0x50
    static let request: UInt64 = 0x60, done: UInt64 = 0x68, command: UInt64 = 0x70
    static let argument: UInt64 = 0x78, result: UInt64 = 0x80, clock: UInt64 = 0xC0

    var number: Int { Int(field(CPU.index)) }
    var apicID: UInt32 { UInt32(truncatingIfNeeded: field(CPU.apic)) }
    var isOnline: Bool { field(CPU.online) != 0 }
    var vifPage: UInt64 { field(CPU.vif) }
    var clockArea: UInt64 { base + CPU.clock }
}

/// Test-and-set with `pause`. The word holds the owner's CPU number + 1, so the console
/// can let the owner in again (an exception while printing).
struct SpinLock {
    let word: UInt64

    func acquire(_ owner: UInt64) {
        while tryLock(word, owner) == 0 {
            while read64(word) != 0 { cpuPause() }
        }
    }

    func release() { write64(word, 0) }
    var owner: UInt64 { read64(word) }
}

enum SMP {
    static let maxCPUs = 64
    static let blockPages: UInt64 = 30     // CPU page, VIF page, 5 x 16 KiB IST, 32 KiB stack
    static let commandBench: UInt64 = 1
    static let commandSleep: UInt64 = 2
    static var trampoline: UInt64 = 0

    static var count: Int { Int(read64(cpuTableAddress() + UInt64(8 * maxCPUs))) }
    static func cpu(_ i: Int) -> CPU { CPU(base: read64(cpuTableAddress() + UInt64(8 * i))) }
    static var bsp: CPU { CPU(base: cpu0Address()) }
    static var online: Int { var n = 0; for i in 0..<count where cpu(i).isOnline { n += 1 }; return n }

    private static func add(_ c: CPU) {
        let n = count
        c.setField(CPU.index, UInt64(n))
        write64(cpuTableAddress() + UInt64(8 * n), c.base)
        write64(cpuTableAddress() + UInt64(8 * maxCPUs), UInt64(n + 1))
    }

    /// The BSP's page (static, zeroed with .bss); first, so current() works everywhere.
    static func initializeBSP() {
        let c = bsp
        c.setField(CPU.selfPointer, c.base)
        c.setField(CPU.low, bspStacksLow())
        c.setField(CPU.high, bspStacksHigh())
        c.setField(CPU.vif, Platform.vif)
        c.setField(CPU.online, 1)
        add(c)
    }

    /// The CPU whose stacks hold RSP (kernel or IST): no MSR or segment base needed.
    static func current() -> CPU {
        let sp = currentRSP()
        for i in 0..<count {
            let c = cpu(i)
            if sp >= c.field(CPU.low) && sp < c.field(CPU.high) { return c }
        }
        return bsp
    }

    /// Starts every enabled MADT processor in parallel, then waits up to 20 ms for them
    /// (late ones still come online; `cpus` shows them as starting until then).
    static func startAPs() {
        guard APIC.on, ACPI.cpus.count > 1 else { return }
        trampoline = trampolinePage()
        guard trampoline != 0 else { return }
        installTrampoline(trampoline, readCR3())
        var targets: [UInt32] = []
        for id in ACPI.cpus where id != APIC.bspID && count < maxCPUs {
            let block = Pages.allocate(blockPages)
            if block == 0 { break }
            let c = CPU(base: block)
            for i in 0..<UInt64(512) { write64(block + 8 * i, 0) }
            c.setField(CPU.selfPointer, block)
            c.setField(CPU.apic, UInt64(id))
            c.setField(CPU.low, block)
            c.setField(CPU.high, block + blockPages * pageSize)
            c.setField(CPU.stack, block + blockPages * pageSize)
            setupAPTables(block, block + 0x2000)
            if Platform.kind == .pvmNative { c.setField(CPU.vif, block + pageSize) }
            add(c)
            targets.append(id)
        }
        // Real hardware wants 10 ms after INIT and 200 us between SIPIs; a hypervisor's
        // virtual APIC does not (Linux skips the delays there too).
        let bare = Platform.kind == .hardware && cpuid(1).ecx & (1 << 31) == 0
        for id in targets { APIC.send(to: id, mode: 5, vector: 0) }
        if bare { delay(10_000) }
        for _ in 0..<2 {
            for id in targets { APIC.send(to: id, mode: 6, vector: UInt8(trampoline >> 12)) }
            if bare { delay(200) }
        }
        let t0 = rdtsc()
        while online < count && rdtsc() &- t0 < Platform.tscKHz * 20 { cpuPause() }
    }

    static func delay(_ microseconds: UInt64) {
        let t0 = rdtsc()
        while rdtsc() &- t0 < microseconds * Platform.tscKHz / 1000 { cpuPause() }
    }

    /// A page below 1 MiB (SIPI vectors are page numbers) that nothing else uses: inside
    /// the memory map, clear of the start info, memory map, command line, ACPI tables,
    /// pvmm's boot structures (0-0x6fff, its page directories at 0x10000-0x4ffff) and
    /// the legacy 0xA0000-0xFFFFF hole.
    static func trampolinePage() -> UInt64 {
        var p: UInt64 = 0x7000
        while p < 0xA0000 {
            var ok = Kernel.inMemoryMap(p, pageSize) && !ACPI.overlaps(p, pageSize) && !(p >= 0x10000 && p < 0x50000)
            for (a, n) in Kernel.bootData where a != 0 && p < a + n && a < p + pageSize { ok = false }
            if ok { return p }
            p += pageSize
        }
        return 0
    }

    /// Runs `command` on every online CPU at once (this one included) and waits.
    static func runEverywhere(_ command: UInt64, _ argument: UInt64) {
        let me = current()
        for i in 0..<count where cpu(i).base != me.base && cpu(i).isOnline {
            let c = cpu(i)
            c.setField(CPU.command, command)
            c.setField(CPU.argument, argument)
            c.setField(CPU.request, c.field(CPU.request) &+ 1)
            APIC.send(to: c.apicID, mode: 0, vector: Vector.wake)
        }
        me.setField(CPU.command, command)
        me.setField(CPU.argument, argument)
        perform(me)
        for i in 0..<count where cpu(i).base != me.base && cpu(i).isOnline {
            while cpu(i).field(CPU.done) != cpu(i).field(CPU.request) { cpuPause() }
        }
    }

    static func perform(_ cpu: CPU) {
        switch cpu.field(CPU.command) {
        case commandBench:
            let t0 = rdtsc()
            _ = benchLoop(cpu.field(CPU.argument))
            cpu.setField(CPU.result, rdtsc() &- t0)
        case commandSleep:
            Timer.performSleep(cpu, ms: cpu.field(CPU.argument))
        default:
            break
        }
    }
}

/// An AP, on its own stack with its GDT/TSS/VIF in place (pvos_ap_entry64).
@_cdecl("pvos_ap_main")
public func pvosAPMain(_ base: UInt64) -> Never {
    let cpu = CPU(base: base)
    Platform.registerVIF(cpu)
    _ = APIC.enableLocal()
    Timer.initializeCPU(cpu)
    if Clock.kvmclock { Clock.register(cpu) }
    cpu.setField(CPU.online, 1)
    Platform.enableInterrupts(cpu)
    while true {
        let request = cpu.field(CPU.request)
        if request != cpu.field(CPU.done) {
            SMP.perform(cpu)
            cpu.setField(CPU.done, request)
        }
        Platform.idle(cpu) { cpu.field(CPU.request) != cpu.field(CPU.done) }
    }
}
