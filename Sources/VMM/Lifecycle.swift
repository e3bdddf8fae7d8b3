import CKVM
import Devices
import KVM

/// How a VM ended.
public enum VMExit: Sendable, Equatable, CustomStringConvertible {
    /// The guest wrote a status to the system-control port.
    case poweredOff(status: Int32)
    /// The guest reset the machine (i8042 0xFE, or a KVM reset event).
    case reset
    /// `stop()` was called (Ctrl-A x, a signal).
    case stopped
    /// `kill()` (the control socket's `kill`): ended at once, no guest involvement.
    case killed
    /// A `stop` asked the guest to power off and it did not within the timeout.
    case stopTimedOut(seconds: Int)
    /// Triple fault, KVM internal error, emulation failure, failed entry.
    case crashed(CrashReport)
    /// A KVM ioctl failed under the vCPU loop.
    case failed(String)

    /// The status `pvmm run` exits with.
    public var exitStatus: Int32 {
        switch self {
        case .poweredOff(let s): s & 0xFF
        case .reset, .stopped, .killed, .stopTimedOut: 0
        case .crashed, .failed: 1
        }
    }

    public var description: String {
        switch self {
        case .poweredOff(let s): "guest powered off with status \(s)"
        case .reset: "guest reset"
        case .stopped: "stopped"
        case .killed: "killed"
        case .stopTimedOut(let s): "stop timeout: the guest did not power off within \(s) s"
        case .crashed(let r): r.description
        case .failed(let m): m
        }
    }
}

/// Why the guest died, with its registers: one screen for stderr.
public struct CrashReport: Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public let rip: UInt64
    public let registers: String
    /// The exception vector, when the guest reported one (its panic report).
    public var vector: UInt64? = nil

    public var description: String { "pvmm: VM crashed: \(reason)\n\(registers)" }
}

/// Exit counts, by kind, across all vCPUs. Benchmarks read these to report exits per unit
/// of work; the cost of counting is one relaxed atomic add on a path that just took a
/// ~20 us exit.
public final class VMStats: Sendable {
    public let pio = StatCounter()
    public let mmio = StatCounter()
    public let interrupted = StatCounter()
    /// Per virtio device: requests, notifications received, interrupts sent, errors.
    public let devices: [DeviceStats]

    public init(devices: [DeviceStats] = []) { self.devices = devices }

    public var totalExits: UInt64 { pio.value + mmio.value }
}

extension BinaryInteger {
    /// Zero-padded lowercase hex, for reports.
    func hex(_ width: Int = 16) -> String {
        let s = String(self, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
}

func describe(regs r: kvm_regs, sregs s: kvm_sregs) -> String {
    func row(_ items: [(String, UInt64)]) -> String {
        items.map { "\($0.0)=\($0.1.hex())" }.joined(separator: " ")
    }
    func seg(_ name: String, _ g: kvm_segment) -> String {
        "\(name)=\(g.selector.hex(4)) base=\(g.base.hex()) limit=\(g.limit.hex(8)) type=\(g.type) dpl=\(g.dpl) l=\(g.l) db=\(g.db) p=\(g.present)"
    }
    return [
        row([("RIP", r.rip), ("RSP", r.rsp), ("RFLAGS", r.rflags)]),
        row([("RAX", r.rax), ("RBX", r.rbx), ("RCX", r.rcx), ("RDX", r.rdx)]),
        row([("RSI", r.rsi), ("RDI", r.rdi), ("RBP", r.rbp), ("R8 ", r.r8)]),
        row([("R9 ", r.r9), ("R10", r.r10), ("R11", r.r11), ("R12", r.r12)]),
        row([("R13", r.r13), ("R14", r.r14), ("R15", r.r15)]),
        row([("CR0", s.cr0), ("CR2", s.cr2), ("CR3", s.cr3), ("CR4", s.cr4), ("EFER", s.efer)]),
        seg("CS", s.cs), seg("SS", s.ss), seg("TR", s.tr),
        "GDT=\(s.gdt.base.hex())/\(s.gdt.limit.hex(4)) IDT=\(s.idt.base.hex())/\(s.idt.limit.hex(4))",
    ].joined(separator: "\n")
}
