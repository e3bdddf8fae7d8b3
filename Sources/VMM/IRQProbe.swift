import CKVM
import Devices
import GuestMemory
import KVM

/// A benchmark-only device (`--irq-probe`) that measures interrupt delivery from an irqfd
/// write to the guest's handler, the path every virtio completion takes.
///
/// Registers (one 4 KiB MMIO window at `base`, announced as `pvmm_irq_probe=BASE:GSI`):
/// - 0x00 TRIGGER, 32-bit write: an ioeventfd (no exit). The probe's thread reads the TSC,
///   stores it at the mailbox, then writes the irqfd for `gsi`.
/// - 0x08 MAILBOX, 32-bit writes low then high (0x0C): guest-physical address of a u64.
/// On this PVM host the guest's rdtsc reads the host's counter, so the guest's handler
/// timestamp minus the mailbox value is the irqfd -> handler latency.
final class IRQProbe: MMIODevice, @unchecked Sendable {
    // @unchecked: `mailbox` is written by a vCPU (setup, before any trigger) and read by
    // the probe thread after the trigger's eventfd; the eventfd write/read orders them.
    static let base: UInt64 = 0xD0FF_0000
    static let gsi: UInt32 = 23
    static var cmdlineEntry: String { "pvmm_irq_probe=0x\(String(base, radix: 16)):\(gsi)" }

    let memory: GuestMemory
    let trigger: EventFD
    let irq: EventFD
    let loop: EventLoop
    nonisolated(unsafe) var mailbox = ProbeMailbox()

    init(memory: GuestMemory, vm: borrowing VirtualMachine) throws(VMMError) {
        self.memory = memory
        trigger = try EventFD()
        irq = try EventFD()
        do {
            try vm.registerIRQFD(irq.fd, gsi: Self.gsi)
            try vm.registerIOEventFD(trigger.fd, mmio: Self.base, length: 4)
        } catch { throw .kvm(error) }
        loop = try EventLoop(name: "pvmm-irqprobe")
        try loop.add(trigger.fd) { [unowned self] in
            guard trigger.drain() > 0 else { return }
            fire()
        }
    }

    func fire() {
        mailbox.store(ckvm_rdtsc(), in: memory)
        irq.signal()
    }

    var mapping: MMIOBus.Mapping { MMIOBus.Mapping(base: Self.base, length: 0x1000, device: self) }

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        for i in data.indices { data[i] = 0 }
    }

    func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        // 0x00 reaches here only when KVM refused the ioeventfd.
        if offset == 0x00 { trigger.signal() } else { mailbox.write(offset: offset, from: data) }
        return .none
    }
}
