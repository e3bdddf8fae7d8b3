import CKVM

/// A vCPU's architectural state as KVM exposes it: what a reset puts back (the state
/// captured when the vCPU was created) and what a snapshot will save.
public struct VCPUState: Sendable {
    public var regs: kvm_regs
    public var sregs: kvm_sregs
    /// LAPIC page, pending events, FPU/SSE (a `struct ckvm_vcpu_extra`, as bytes).
    public var extra: [UInt8]
    /// XSAVE area and XCR0 (a `struct ckvm_vcpu_xstate`, as bytes; each part only if KVM gave it).
    public var xstate: [UInt8]
    public var mpState: UInt32
    /// Values of the MSRs in `VCPUState.msrIndices`, nil where KVM does not know one.
    public var msrs: [UInt64?]

    public init(regs: kvm_regs, sregs: kvm_sregs, extra: [UInt8], xstate: [UInt8], mpState: UInt32, msrs: [UInt64?]) {
        self.regs = regs
        self.sregs = sregs
        self.extra = extra
        self.xstate = xstate
        self.mpState = mpState
        self.msrs = msrs
    }

    /// The MSRs a guest programs that outlive its memory: paravirtual areas KVM keeps
    /// writing to (kvmclock, async PF, steal time, PV EOI), PVM's VIF page, syscall
    /// entry points, and the APIC base (x2APIC mode).
    public static let msrIndices: [UInt32] = [
        0x1B,                                     // IA32_APIC_BASE
        0x11, 0x12,                               // old kvmclock wall clock / system time
        0x4B56_4D00, 0x4B56_4D01,                 // kvmclock wall clock / system time
        0x4B56_4D02, 0x4B56_4D03, 0x4B56_4D04,    // async PF, steal time, PV EOI
        0x4B56_4D10,                              // PVM VIF page
        0x4B56_4D11, 0x4B56_4D12, 0x4B56_4D13,    // PVM signature, features, TSC kHz (read-only: recorded)
        0x6E0,                                    // IA32_TSC_DEADLINE (after the LAPIC on restore)
        0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, // STAR LSTAR CSTAR SFMASK
        0xC000_0102,                              // KERNEL_GS_BASE
    ]
}

extension VCPUState {
    public static let tscDeadlineMSR: UInt32 = 0x6E0
}

extension VCPU {
    public func setMPState(_ state: UInt32) throws(KVMError) {
        _ = try check(ckvm_set_mp_state(fd, state), "KVM_SET_MP_STATE")
    }

    /// Reads the state (registers, LAPIC, events, FPU, MP state, `msrIndices`).
    public func saveState() throws(KVMError) -> VCPUState {
        var x = [UInt8](repeating: 0, count: ckvm_vcpu_extra_size())
        _ = try check(x.withUnsafeMutableBytes { ckvm_get_vcpu_extra(fd, $0.baseAddress) }, "KVM_GET_LAPIC/VCPU_EVENTS/FPU")
        let msrs = try self.msrs(VCPUState.msrIndices)
        var xs = [UInt8](repeating: 0, count: ckvm_vcpu_xstate_size())
        _ = xs.withUnsafeMutableBytes { ckvm_get_vcpu_xstate(fd, $0.baseAddress) }
        return VCPUState(regs: try registers(), sregs: try specialRegisters(), extra: x, xstate: xs, mpState: try mpState(), msrs: msrs)
    }

    /// Puts `state` back. Order as KVM needs it: special registers first (they carry the
    /// APIC base, so the LAPIC page lands in the right mode), then MSRs, LAPIC and
    /// events, and the MP state last (an AP goes back to waiting for INIT/SIPI). XCR0
    /// before the XSAVE area, both after CR4; the TSC deadline once the LAPIC is in its
    /// mode (KVM ignores it otherwise). MSRs KVM refuses (PVM's read-only ones) are skipped.
    public func restoreState(_ state: VCPUState) throws(KVMError) {
        try setSpecialRegisters(state.sregs)
        try setRegisters(state.regs)
        var entries: [(index: UInt32, value: UInt64)] = []
        for (n, index) in VCPUState.msrIndices.enumerated() where index != VCPUState.tscDeadlineMSR {
            if n < state.msrs.count, let v = state.msrs[n] { entries.append((index, v)) }
        }
        try setMSRs(entries)
        if state.xstate.count == ckvm_vcpu_xstate_size() {
            _ = try check(state.xstate.withUnsafeBytes { ckvm_set_vcpu_xstate(fd, $0.baseAddress) }, "KVM_SET_XCRS/XSAVE")
        }
        _ = try check(state.extra.withUnsafeBytes { ckvm_set_vcpu_extra(fd, $0.baseAddress) }, "KVM_SET_LAPIC/VCPU_EVENTS/FPU")
        if let n = VCPUState.msrIndices.firstIndex(of: VCPUState.tscDeadlineMSR), n < state.msrs.count, let v = state.msrs[n] {
            _ = try setMSR(VCPUState.tscDeadlineMSR, v)
        }
        try setMPState(state.mpState)
    }
}

extension VirtualMachine {
    /// The in-kernel PIC and IOAPIC state (KVM_GET_IRQCHIP for chips 0-2), as the bytes
    /// of a `struct ckvm_irqchips`.
    public func irqChipState() throws(KVMError) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: ckvm_irqchips_size())
        _ = try check(c.withUnsafeMutableBytes { ckvm_get_irqchips(fd, $0.baseAddress) }, "KVM_GET_IRQCHIP")
        return c
    }

    public func setIRQChipState(_ c: [UInt8]) throws(KVMError) {
        _ = try check(c.withUnsafeBytes { ckvm_set_irqchips(fd, $0.baseAddress) }, "KVM_SET_IRQCHIP")
    }
}

extension VirtualMachine {
    /// KVM_GET_CLOCK: the kvmclock base (ns) and, with KVM_CLOCK_REALTIME in `flags`,
    /// the host's wall clock at the same instant.
    public func clock() throws(KVMError) -> kvm_clock_data {
        var c = kvm_clock_data()
        _ = try check(ckvm_get_clock(fd, &c), "KVM_GET_CLOCK")
        return c
    }

    /// KVM_SET_CLOCK with only `clock` (flags 0: no realtime adjustment by KVM).
    public func setClock(_ ns: UInt64) throws(KVMError) {
        var c = kvm_clock_data()
        c.clock = ns
        _ = try check(ckvm_set_clock(fd, &c), "KVM_SET_CLOCK")
    }
}
