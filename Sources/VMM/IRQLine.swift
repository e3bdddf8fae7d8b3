import CKVM
import Devices
import Synchronization

/// A device's interrupt output wired to an input of KVM's in-kernel IOAPIC through
/// KVM_IRQ_LINE. Only level changes reach the kernel: each call is an ioctl (~3-6 us).
final class IRQLine: InterruptLine {
    let vmFD: Int32
    let irq: UInt32
    let level = Mutex(false)

    init(vmFD: Int32, irq: UInt32) {
        self.vmFD = vmFD
        self.irq = irq
    }

    func set(_ high: Bool) {
        level.withLock { current in
            guard current != high else { return }
            current = high
            _ = ckvm_irq_line(vmFD, irq, high ? 1 : 0)
        }
    }
}
