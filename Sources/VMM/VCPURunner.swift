#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import KVM
import Sandbox

/// One vCPU and the plain thread that runs it.
///
/// The loop below is the hot path: no `await`, no Foundation, no allocation per exit.
/// `@unchecked Sendable`: handed to exactly one thread; `thread` is written by `start()`
/// before `wait()`/kicks read it, and `vm` is set before the thread starts.
final class VCPUContext: @unchecked Sendable {
    let vcpu: VCPU
    let kicker: VCPUKicker
    var thread: pthread_t?
    unowned(unsafe) var vm: VM! = nil

    init(vcpu: consuming VCPU) {
        kicker = vcpu.kicker
        self.vcpu = vcpu
    }

    func threadMain() {
        let name = "vcpu\(vcpu.id)"
        _ = ckvm_set_thread_name(name)
        _ = ckvm_unblock_kick_signal()
        // Before the first KVM_RUN: every exit it returns is guest-driven.
        Seccomp.enterRoleOrDie(.vcpu, label: name)
        let exit = loop()
        vm.finish(exit)
    }

    func loop() -> VMExit {
        let vm = self.vm!
        let bus = vm.bus, mmio = vm.mmioBus, stats = vm.stats
        while true {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch { return .failed("\(error)") }
            switch exit {
            case .ioOut(let a):
                stats.pio.add()
                switch bus.write(port: a.port, size: a.size, count: a.count, from: UnsafeRawBufferPointer(a.data)) {
                case .none: break
                case .powerOff(let status): return .poweredOff(status: status)
                case .reset: return .reset
                }
            case .ioIn(let a):
                stats.pio.add()
                bus.read(port: a.port, size: a.size, count: a.count, into: a.data)
            case .mmioRead(let a):
                stats.mmio.add()
                mmio.read(address: a.address, into: a.data)
            case .mmioWrite(let a):
                stats.mmio.add()
                switch mmio.write(address: a.address, from: UnsafeRawBufferPointer(a.data)) {
                case .none: break
                case .powerOff(let status): return .poweredOff(status: status)
                case .reset: return .reset
                }
            case .hlt:
                // The in-kernel LAPIC (always created) handles HLT: this exit cannot happen.
                return crash("unexpected HLT exit (the in-kernel irqchip handles HLT)")
            case .interrupted:
                stats.interrupted.add()
                // Clear the kick first, then read the flags: a kick landing in between
                // leaves immediate_exit set and brings us straight back here.
                vcpu.clearImmediateExit()
                if let end = parkIfNeeded() { return end }
            case .shutdown:
                return crash("triple fault (KVM_EXIT_SHUTDOWN)")
            case .internalError(let sub, let data):
                let what = sub == 1 ? "emulation failure" : "KVM internal error, suberror \(sub)"
                return crash("\(what); data: \(data.map { "0x" + $0.hex(1) }.joined(separator: " "))")
            case .failEntry(let reason):
                return crash("KVM entry failed, hardware reason 0x\(reason.hex(1))")
            case .exception(let v, let e):
                return crash("unhandled exception \(v), error code 0x\(e.hex(1))")
            case .systemEvent(let type):
                // KVM_SYSTEM_EVENT_SHUTDOWN = 1, RESET = 2, CRASH = 3.
                if type == 3 { return crash("guest crash event") }
                return type == 2 ? .reset : .poweredOff(status: 0)
            case .unknown(let reason):
                return crash("unexpected exit reason \(reason)")
            }
        }
    }

    /// Handles stop and pause requests after a kick. Returns a reason to leave the loop.
    func parkIfNeeded() -> VMExit? {
        let vm = self.vm!
        var counted = false
        while true {
            let (stopping, paused) = vm.lifecycle.withLock { l in
                if l.stopping { return (true, false) }
                if l.paused && !counted { l.parked += 1; counted = true }
                if !l.paused && counted { l.parked -= 1; counted = false }
                return (false, l.paused)
            }
            if stopping { return vm.lifecycle.withLock { $0.exit } ?? .stopped }
            if !paused { return nil }
            vm.wake.wait(timeoutMs: 100)
        }
    }

    func crash(_ reason: String) -> VMExit {
        let regs: String
        var rip: UInt64 = 0
        do {
            let (r, s) = try vcpu.syncedRegisters ?? (vcpu.registers(), vcpu.specialRegisters())
            rip = r.rip
            regs = describe(regs: r, sregs: s)
        } catch {
            regs = "(registers unavailable: \(error))"
        }
        return .crashed(CrashReport(reason: "vCPU \(vcpu.id): \(reason)", rip: rip, registers: regs))
    }
}
