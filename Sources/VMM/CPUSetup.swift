import Boot
import CKVM
import KVM

extension VM {
    /// Loads the boot CPU state computed by `Boot` into a vCPU.
    static func setInitialState(_ vcpu: borrowing VCPU, _ st: InitialCPUState) throws(KVMError) {
        var s = try vcpu.specialRegisters()
        s.cr0 = st.cr0
        s.cr3 = st.cr3
        s.cr4 = st.cr4
        s.efer = st.efer
        s.cs = kvmSegment(st.cs)
        s.ds = kvmSegment(st.ds)
        s.es = kvmSegment(st.es)
        s.fs = kvmSegment(st.fs)
        s.gs = kvmSegment(st.gs)
        s.ss = kvmSegment(st.ss)
        s.tr = kvmSegment(st.tr)
        s.ldt = kvmSegment(st.ldt)
        s.gdt = kvm_dtable(base: st.gdt.base, limit: st.gdt.limit, padding: (0, 0, 0))
        s.idt = kvm_dtable(base: st.idt.base, limit: st.idt.limit, padding: (0, 0, 0))
        try vcpu.setSpecialRegisters(s)

        var r = kvm_regs()
        r.rip = st.rip
        r.rsp = st.rsp
        r.rbx = st.rbx
        r.rsi = st.rsi
        r.rflags = st.rflags
        try vcpu.setRegisters(r)
    }

    static func kvmSegment(_ g: SegmentState) -> kvm_segment {
        var k = kvm_segment()
        k.base = g.base
        k.limit = g.limit
        k.selector = g.selector
        k.type = g.type
        k.present = g.present ? 1 : 0
        k.dpl = g.dpl
        k.db = g.db ? 1 : 0
        k.s = g.s ? 1 : 0
        k.l = g.l ? 1 : 0
        k.g = g.g ? 1 : 0
        k.avl = g.avl ? 1 : 0
        k.unusable = g.unusable ? 1 : 0
        return k
    }
}
