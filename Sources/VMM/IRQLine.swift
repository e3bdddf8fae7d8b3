import Devices
import KVM
import Synchronization

/// A device's interrupt output wired to an input of KVM's in-kernel IOAPIC through
/// KVM_IRQ_LINE. Only level changes reach the kernel: each call is an ioctl (~3-6 us).
final class IRQLine: InterruptLine {
    let vm: VMHandle
    let irq: UInt32
    let level = Mutex(false)

    init(vm: VMHandle, irq: UInt32) {
        self.vm = vm
        self.irq = irq
    }

    func set(_ high: Bool) {
        level.withLock { current in
            guard current != high else { return }
            current = high
            try? vm.setIRQLine(irq, level: high)
        }
    }
}
