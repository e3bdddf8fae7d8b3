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
@_extern(c, "pvos_read_cr2") func readCR2() -> UInt64
@_extern(c, "pvos_hlt") func hlt()
@_extern(c, "pvos_pause") func cpuPause()
@_extern(c, "pvos_cli") func cli()
@_extern(c, "pvos_sti") func sti()
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
    static var interruptsOn = false     // kept here: PVM frames don't show VIF.if

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

    static var name: StaticString {
        switch kind {
        case .pvmNative: return "pvm-native"
        case .pvmEmulated: return "pvm-emulated"
        case .hardware: return "hardware"
        }
    }

    static func enableInterrupts() {
        interruptsOn = true
        if vif != 0 {
            write8(vif + UInt64(PVM.vifIF), 1)
            // An IRQ that came in while disabled waits in VIF.pending until an exit.
            if UnsafePointer<UInt8>(bitPattern: UInt(vif) + UInt(PVM.vifPending))!.pointee != 0 {
                outb(LegacyPorts.postCode, 0)
            }
        } else {
            sti()
        }
    }

    static func disableInterrupts() {
        interruptsOn = false
        if vif != 0 { write8(vif + UInt64(PVM.vifIF), 0) } else { cli() }
    }

    /// The faulting address of the last #PF.
    static func faultAddress() -> UInt64 {
        cr2InVIF ? read64(vif + UInt64(PVM.vifCR2)) : readCR2()
    }

    /// Waits a little for outside input. pvmm turns HLT into a short sleep that input
    /// ends; elsewhere, with no interrupts set up, HLT would never return.
    static func idle() {
        if underPVMM { hlt() } else { cpuPause() }
    }

    /// Milliseconds since the kernel's first instruction.
    static func uptimeMilliseconds() -> UInt64 {
        (rdtsc() &- bootTSC()) / tscKHz
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
