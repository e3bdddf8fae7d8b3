// The platform seam: the only Swift file that knows about PVM. Everything else asks
// Platform for interrupts, the fault address, idling, time and power-off.

@_extern(c, "pvos_inb") func inb(_ port: UInt16) -> UInt8
@_extern(c, "pvos_outb") func outb(_ port: UInt16, _ value: UInt8)
@_extern(c, "pvos_inl") func inl(_ port: UInt16) -> UInt32
@_extern(c, "pvos_outl") func outl(_ port: UInt16, _ value: UInt32)
@_extern(c, "pvos_rdmsr_safe") func rdmsrSafe(_ msr: UInt32, _ value: UnsafeMutablePointer<UInt64>) -> Int32
@_extern(c, "pvos_wrmsr_safe") func wrmsrSafe(_ msr: UInt32, _ value: UInt64) -> Int32
@_extern(c, "pvos_cpuid") func cpuidRaw(_ leaf: UInt32, _ sub: UInt32, _ out: UnsafeMutablePointer<UInt32>)
@_extern(c, "pvos_rdtsc") func rdtsc() -> UInt64
@_extern(c, "pvos_virtio_lazy_ack_addr") func virtioLazyAckAddress() -> UInt64
@_extern(c, "pvos_read_cr2") func readCR2() -> UInt64
@_extern(c, "pvos_hlt") func hlt()
@_extern(c, "pvos_vif_halt") func vifHalt(_ vif: UInt64)
@_extern(c, "pvos_pause") func cpuPause()
@_extern(c, "pvos_cli") func cli()
@_extern(c, "pvos_sti") func sti()
@_extern(c, "pvos_sti_hlt") func stiHlt()
@_extern(c, "pvos_write8") func write8(_ address: UInt64, _ value: UInt8)
@_extern(c, "pvos_read64") func read64(_ address: UInt64) -> UInt64
@_extern(c, "pvos_vif_page_addr") func vifPageAddress() -> UInt64
@_extern(c, "pvos_boot_tsc_value") func bootTSC() -> UInt64

enum PlatformKind {
    case pvmNative    // PVM host, VIF registered: runs natively at hardware CPL 3
    case pvmEmulated  // PVM host, no VIF: every instruction is emulated
    case hardware     // no PVM: plain CPL 0 long mode (hardware KVM, TCG)
}

func cpuid(_ leaf: UInt32, _ sub: UInt32 = 0) -> (eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) {
    var r: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    withUnsafeMutablePointer(to: &r) {
        $0.withMemoryRebound(to: UInt32.self, capacity: 4) { cpuidRaw(leaf, sub, $0) }
    }
    return r
}

enum Platform {
    static var kind = PlatformKind.hardware
    static var vif: UInt64 = 0          // VIF page address when kind == .pvmNative
    static var cr2InVIF = false
    static var underPVMM = false        // pvmm's sysctl port answered
    static var tscKHz: UInt64 = 2_000_000
    static var tscSource: StaticString = "assumed"

    /// Detects the host and makes the vCPU native when possible. Runs first in Swift:
    /// until the VIF is registered every instruction costs ~1-2 us.
    static func detect(noVIF: Bool) {
        var value: UInt64 = 0
        if rdmsrSafe(PVM.msrSignature, &value) == 1 && value == PVM.signature {
            var reg: UInt64 = 0
            _ = rdmsrSafe(PVM.msrVIF, &reg)
            let wanted = PVM.vifModeValid | PVM.vifPublishCR2
            if reg != 0 {
                // The VMM registered it; make sure CR2 is published too.
                vif = reg & ~0xFFF
                cr2InVIF = reg & PVM.vifPublishCR2 != 0 || wrmsrSafe(PVM.msrVIF, vif | wanted) == 1
            } else if !noVIF {
                let page = vifPageAddress()
                write8(page + UInt64(PVM.vifIF), 0)
                write8(page + UInt64(PVM.vifPending), 0)
                if wrmsrSafe(PVM.msrVIF, page | wanted) == 1 { vif = page; cr2InVIF = true }
            }
            kind = vif != 0 ? .pvmNative : .pvmEmulated
            if rdmsrSafe(PVM.msrTSCkHz, &value) == 1 && value != 0 {
                tscKHz = value
                tscSource = "pvm-msr"
            }
        } else {
            kind = .hardware
            detectTSC()
        }
        underPVMM = inl(SysCtl.port) == SysCtl.signature
        if underPVMM { write8(virtioLazyAckAddress(), 1) }
    }

    /// Without PVM: the hypervisor timing leaf, then CPUID 0x15/0x16, else 2 GHz.
    private static func detectTSC() {
        let hypervisor = cpuid(1).ecx & (1 << 31) != 0
        if hypervisor && cpuid(0x4000_0000).eax >= 0x4000_0010 {
            let t = cpuid(0x4000_0010)
            if t.eax != 0 { tscKHz = UInt64(t.eax); tscSource = "cpuid-hv"; return }
        }
        let maxLeaf = cpuid(0).eax
        if maxLeaf >= 0x15 {
            let c = cpuid(0x15)
            if c.eax != 0 && c.ebx != 0 && c.ecx != 0 {
                tscKHz = UInt64(c.ecx) * UInt64(c.ebx) / UInt64(c.eax) / 1000
                tscSource = "cpuid-15"
                return
            }
        }
        if maxLeaf >= 0x16 {
            let f = cpuid(0x16).eax & 0xFFFF
            if f != 0 { tscKHz = UInt64(f) * 1000; tscSource = "cpuid-16"; return }
        }
    }

    /// First thing on an AP: its own VIF page (the BSP set CPU.vif only if it runs
    /// natively itself) makes it native too. On failure it stays emulated, with cli/sti.
    static func registerVIF(_ cpu: CPU) {
        let page = cpu.vifPage
        guard page != 0 else { return }
        write8(page + UInt64(PVM.vifIF), 0)
        write8(page + UInt64(PVM.vifPending), 0)
        if wrmsrSafe(PVM.msrVIF, page | PVM.vifModeValid | PVM.vifPublishCR2) != 1 { cpu.setField(CPU.vif, 0) }
    }

    static var name: StaticString {
        switch kind {
        case .pvmNative: return "pvm-native"
        case .pvmEmulated: return "pvm-emulated"
        case .hardware: return "hardware"
        }
    }

    /// Turns `cpu`'s interrupt flag on (it must be the running CPU). On PVM an IRQ that
    /// came in while disabled waits in VIF.pending until an exit: `out 0x80` is one.
    static func enableInterrupts(_ cpu: CPU) {
        let v = cpu.vifPage
        if v != 0 {
            write8(v + UInt64(PVM.vifIF), 1)
            if vifPending(v) { outb(LegacyPorts.postCode, 0) }
        } else {
            sti()
        }
    }

    static func disableInterrupts(_ cpu: CPU) {
        let v = cpu.vifPage
        if v != 0 { write8(v + UInt64(PVM.vifIF), 0) } else { cli() }
    }

    private static func vifPending(_ vif: UInt64) -> Bool {
        UnsafePointer<UInt8>(bitPattern: UInt(vif) + UInt(PVM.vifPending))!.pointee != 0
    }

    /// The faulting address of the last #PF.
    static func faultAddress() -> UInt64 {
        let v = SMP.current().vifPage
        return cr2InVIF && v != 0 ? read64(v + UInt64(PVM.vifCR2)) : readCR2()
    }

    /// Sleeps on `cpu` (the running one) until an interrupt unless `ready()`. The timer
    /// is tickless: only an interrupt or a deadline someone armed (`Timer.wake`, or
    /// `until`, a TSC value, 0 = none) ends the sleep. On PVM the check runs with VIF.if
    /// clear, so an IRQ during it pends and ends the wait; `pvos_vif_halt` sets VIF.if
    /// and halts, and an IRQ between the two makes irq_entry skip the hlt (no window).
    /// Elsewhere `sti; hlt` has no window. Without an interrupt controller: pvmm turns
    /// HLT into a short sleep that input ends; anywhere else only busy polling works.
    static func idle(_ cpu: CPU, until deadline: UInt64 = 0, _ ready: () -> Bool) {
        guard APIC.on else {
            if underPVMM { hlt() } else { cpuPause() }
            return
        }
        let v = cpu.vifPage
        if v != 0 {
            write8(v + UInt64(PVM.vifIF), 0)
            let skip = ready()
            if !skip { Timer.wake(cpu, at: deadline) }
            if skip {
                write8(v + UInt64(PVM.vifIF), 1)
                if vifPending(v) { outb(LegacyPorts.postCode, 0) }
            } else {
                vifHalt(v)
            }
        } else {
            cli()
            if ready() { sti(); return }
            Timer.wake(cpu, at: deadline)
            stiHlt()
        }
    }

    /// pvmm sysctl port, then microvm ACPI GED sleep, then i8042 reset, then halt.
    static func powerOff(_ status: UInt32) -> Never {
        outl(SysCtl.port, status)
        write8(0xFEA0_0200, 0x34)
        outb(LegacyPorts.i8042Command, LegacyPorts.i8042Reset)
        while true {
            if kind != .pvmNative { cli() }
            hlt()
        }
    }
}
