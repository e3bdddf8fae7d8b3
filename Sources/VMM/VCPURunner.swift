#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import KVM
import PVMMABI

/// One vCPU and the plain thread that runs it.
///
/// The thread alternates between its mailbox (`VM.awaitRun`: parked on a condition
/// variable while told to pause, no polling) and the run loop below, the hot path: no
/// `await`, no Foundation, no allocation per exit. A kick (immediate_exit + signal)
/// brings it from KVM_RUN back to the mailbox within one exit.
///
/// `@unchecked Sendable`: handed to exactly one thread; `thread` is written by `start()`
/// before `wait()`/kicks read it, and `vm` is set before the thread starts.
final class VCPUContext: @unchecked Sendable {
    let vcpu: VCPU
    let index: Int
    let kicker: VCPUKicker
    /// The state KVM gave the vCPU at creation: what a reboot restores.
    let powerOn: VCPUState
    var thread: SpawnedThread?
    unowned(unsafe) var vm: VM! = nil

    init(vcpu: consuming VCPU, index: Int, powerOn: VCPUState) {
        kicker = vcpu.kicker
        self.vcpu = vcpu
        self.index = index
        self.powerOn = powerOn
    }

    func threadMain() {
        let vm = self.vm!
        while vm.awaitRun(index) {
            if let end = loop() { vm.guestEnded(end, vcpu: index) }
        }
    }

    /// Runs the guest until it ends (the reason) or a kick changes the mailbox (nil).
    func loop() -> VMExit? {
        let vm = self.vm!
        let bus = vm.bus, mmio = vm.mmioBus, stats = vm.stats
        while true {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch { return .failed("\(error)") }
            switch exit {
            case .ioOut(let a):
                stats.pio.add()
                if let end = outcome(bus.write(port: a.port, size: a.size, count: a.count, from: UnsafeRawBufferPointer(a.data))) {
                    return end
                }
            case .ioIn(let a):
                stats.pio.add()
                bus.read(port: a.port, size: a.size, count: a.count, into: a.data)
            case .mmioRead(let a):
                stats.mmio.add()
                mmio.read(address: a.address, into: a.data)
            case .mmioWrite(let a):
                stats.mmio.add()
                if let end = outcome(mmio.write(address: a.address, from: UnsafeRawBufferPointer(a.data))) { return end }
            case .hlt:
                // The in-kernel LAPIC (always created) handles HLT: this exit cannot happen.
                return crash("unexpected HLT exit (the in-kernel irqchip handles HLT)")
            case .interrupted:
                stats.interrupted.add()
                // Clear the kick first, then read the mailbox: a kick landing in between
                // leaves immediate_exit set and brings us straight back here.
                vcpu.clearImmediateExit()
                if !vm.shouldRun(index) { return nil }
            case .shutdown:
                return crash("triple fault (KVM_EXIT_SHUTDOWN)")
            case .internalError(let sub, let data):
                let what = sub == 1 ? "emulation failure" : "KVM internal error, suberror \(sub)"
                return crash("\(what); data: \(data.map { "0x" + $0.hex(1) }.joined(separator: " "))")
            case .failEntry(let reason):
                return crash("KVM entry failed, hardware reason 0x\(reason.hex(1))")
            case .exception(let v, let e):
                return crash("unhandled exception \(v), error code 0x\(e.hex(1))", vector: UInt64(v))
            case .systemEvent(let type):
                // KVM_SYSTEM_EVENT_SHUTDOWN = 1, RESET = 2, CRASH = 3.
                if type == 3 { return crash("guest crash event") }
                return type == 2 ? .reset : .poweredOff(status: 0)
            case .unknown(let reason):
                return crash("unexpected exit reason \(reason)")
            }
        }
    }

    /// What a device access means for the VM: nil to keep running.
    @inline(__always)
    func outcome(_ action: DeviceAction) -> VMExit? {
        switch action {
        case .none: nil
        case .powerOff(let status): .poweredOff(status: status)
        case .reset: .reset
        case .panicked(let p): panicked(p)
        }
    }

    /// The guest's own panic report: its vector and RIP (the faulting code, not the
    /// reporting `out`), with our registers for the rest of the picture.
    func panicked(_ p: GuestPanic) -> VMExit {
        let what: String
        switch p.vector {
        case nil: what = "guest panic (unreadable report)"
        case PanicReport.softwarePanic?: what = "guest panic"
        case let v?: what = "guest panic: exception \(v) at rip 0x\((p.rip ?? 0).hex(1)), error code 0x\((p.errorCode ?? 0).hex(1)), cr2 0x\((p.cr2 ?? 0).hex(1))"
        }
        guard case .crashed(var report) = crash(what, vector: p.vector == PanicReport.softwarePanic ? nil : p.vector) else {
            return .failed(what)
        }
        if let rip = p.rip { report = CrashReport(reason: report.reason, rip: rip, registers: report.registers, vector: report.vector) }
        return .crashed(report)
    }

    func crash(_ reason: String, vector: UInt64? = nil) -> VMExit {
        let regs: String
        var rip: UInt64 = 0
        do {
            let (r, s) = try vcpu.syncedRegisters ?? (vcpu.registers(), vcpu.specialRegisters())
            rip = r.rip
            regs = describe(regs: r, sregs: s)
        } catch {
            regs = "(registers unavailable: \(error))"
        }
        return .crashed(CrashReport(reason: "vCPU \(vcpu.id): \(reason)", rip: rip, registers: regs, vector: vector))
    }
}
