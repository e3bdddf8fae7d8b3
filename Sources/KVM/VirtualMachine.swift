#if canImport(Glibc)
import Glibc
#endif
import CKVM
import SystemPackage

/// A VM fd. Owns the descriptor; vCPUs and eventfds registered on it must not outlive it.
public struct VirtualMachine: ~Copyable {
    public let fd: Int32
    let runSize: Int

    init(fd: Int32, runSize: Int) {
        self.fd = fd
        self.runSize = runSize
    }

    deinit { close(fd) }

    /// A copyable, `Sendable` handle for the VM-fd ioctls devices need after the VM is
    /// built (interrupt lines, irqfds, ioeventfds). It does not own the fd: the
    /// VirtualMachine must outlive every holder (the VM object keeps both).
    public var handle: VMHandle { VMHandle(fd: fd) }

    /// KVM_SET_USER_MEMORY_REGION for `size` bytes at `hostAddress`, visible at `guestAddress`.
    public func setMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt, flags: UInt32 = 0) throws(KVMError) {
        _ = try check(ckvm_set_user_memory_region(fd, slot, flags, guestAddress, size, UInt64(hostAddress)),
                      "KVM_SET_USER_MEMORY_REGION slot \(slot)")
    }

    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let vfd = try check(ckvm_create_vcpu(fd, UInt(id)), "KVM_CREATE_VCPU \(id)")
        return try VCPU(fd: vfd, id: id, runSize: runSize)
    }

    public func createIRQChip() throws(KVMError) {
        _ = try check(ckvm_create_irqchip(fd), "KVM_CREATE_IRQCHIP")
    }

    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) { try handle.setIRQLine(irq, level: level) }

    /// KVM_IOEVENTFD (see VMHandle): ~7 us per notification instead of a ~20 us exit here.
    public func registerIOEventFD(_ fd: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        try handle.registerIOEventFD(fd, mmio: address, length: length, datamatch: datamatch)
    }

    public func unregisterIOEventFD(_ fd: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        try handle.unregisterIOEventFD(fd, mmio: address, length: length, datamatch: datamatch)
    }

    /// KVM_IRQFD (see VMHandle): an IOAPIC input with the in-kernel irqchip.
    public func registerIRQFD(_ fd: Int32, gsi: UInt32) throws(KVMError) { try handle.registerIRQFD(fd, gsi: gsi) }

    public func unregisterIRQFD(_ fd: Int32, gsi: UInt32) throws(KVMError) { try handle.unregisterIRQFD(fd, gsi: gsi) }

    public func capability(_ cap: Int32) -> Int32 { max(0, ckvm_check_extension(fd, Int(cap))) }
}

/// The VM-fd operations that devices and interrupt lines use from their own threads
/// (KVM's VM ioctls are thread-safe). See VirtualMachine.handle for the lifetime rule.
public struct VMHandle: Sendable {
    public let fd: Int32

    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) {
        _ = try check(ckvm_irq_line(fd, irq, level ? 1 : 0), "KVM_IRQ_LINE \(irq)")
    }

    /// KVM_IOEVENTFD: a guest write of `length` bytes at MMIO `address` (matching
    /// `datamatch` when given) signals `eventFD` in the kernel, with no userspace exit.
    public func registerIOEventFD(_ eventFD: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        let flags = datamatch == nil ? 0 : ckvm_ioeventfd_flag_datamatch()
        _ = try check(ckvm_ioeventfd(fd, address, length, eventFD, flags, datamatch ?? 0), "KVM_IOEVENTFD 0x\(String(address, radix: 16))")
    }

    public func unregisterIOEventFD(_ eventFD: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        let flags = ckvm_ioeventfd_flag_deassign() | (datamatch == nil ? 0 : ckvm_ioeventfd_flag_datamatch())
        _ = try check(ckvm_ioeventfd(fd, address, length, eventFD, flags, datamatch ?? 0), "KVM_IOEVENTFD deassign")
    }

    /// Waits until KVM has freed the I/O buses replaced by earlier KVM_IOEVENTFD
    /// registrations. Each registration frees the old bus with call_srcu, and the VM's
    /// final close waits for every such callback (srcu_barrier) at the pace of normal SRCU
    /// grace periods, several jiffies each here: ~8 ms added to the exit of a VM that ends
    /// soon after it started. Registering and removing a scratch ioeventfd (`eventFD`)
    /// at `address`, where nothing else has one, makes KVM wait for an expedited grace
    /// period, which completes the earlier ones too. Blocks up to a few ms: call it from
    /// a thread that is not on the way to the guest's first instruction.
    public func settleIOBus(eventFD: Int32, scratch address: UInt64) throws(KVMError) {
        try registerIOEventFD(eventFD, mmio: address, length: 4)
        try unregisterIOEventFD(eventFD, mmio: address, length: 4)
    }

    /// KVM_IRQFD: writing `eventFD` raises `gsi` without an ioctl from the writer.
    public func registerIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
        _ = try check(ckvm_irqfd(fd, eventFD, gsi, 0), "KVM_IRQFD gsi \(gsi)")
    }

    public func unregisterIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
        _ = try check(ckvm_irqfd(fd, eventFD, gsi, ckvm_irqfd_flag_deassign()), "KVM_IRQFD deassign")
    }
}
