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

    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) {
        _ = try check(ckvm_irq_line(fd, irq, level ? 1 : 0), "KVM_IRQ_LINE \(irq)")
    }

    /// KVM_IOEVENTFD: a guest write of `length` bytes at MMIO `address` (matching
    /// `datamatch` when given) signals `fd` in the kernel, with no userspace exit (~7 us
    /// instead of ~20 us here).
    public func registerIOEventFD(_ fd: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        let flags = datamatch == nil ? 0 : ckvm_ioeventfd_flag_datamatch()
        _ = try check(ckvm_ioeventfd(self.fd, address, length, fd, flags, datamatch ?? 0), "KVM_IOEVENTFD 0x\(String(address, radix: 16))")
    }

    public func unregisterIOEventFD(_ fd: Int32, mmio address: UInt64, length: UInt32, datamatch: UInt64? = nil) throws(KVMError) {
        let flags = ckvm_ioeventfd_flag_deassign() | (datamatch == nil ? 0 : ckvm_ioeventfd_flag_datamatch())
        _ = try check(ckvm_ioeventfd(self.fd, address, length, fd, flags, datamatch ?? 0), "KVM_IOEVENTFD deassign")
    }

    /// KVM_IRQFD: writing `fd` raises `gsi` (an IOAPIC input with the in-kernel irqchip)
    /// without an ioctl from the writer.
    public func registerIRQFD(_ fd: Int32, gsi: UInt32) throws(KVMError) {
        _ = try check(ckvm_irqfd(self.fd, fd, gsi, 0), "KVM_IRQFD gsi \(gsi)")
    }

    public func unregisterIRQFD(_ fd: Int32, gsi: UInt32) throws(KVMError) {
        _ = try check(ckvm_irqfd(self.fd, fd, gsi, ckvm_irqfd_flag_deassign()), "KVM_IRQFD deassign")
    }

    public func capability(_ cap: Int32) -> Int32 { max(0, ckvm_check_extension(fd, Int(cap))) }
}
