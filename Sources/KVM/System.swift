#if canImport(Glibc)
import Glibc
#endif
import CKVM
import SystemPackage

/// The `/dev/kvm` system fd. Owns the descriptor and closes it in `deinit`.
public struct KVMSystem: ~Copyable {
    public let fd: Int32

    public static let expectedAPIVersion: Int32 = 12

    public init(path: String = "/dev/kvm") throws(KVMError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw KVMError("open \(path)", Errno(rawValue: Glibc.errno)) }
        let v = ckvm_get_api_version(fd)
        if v != Self.expectedAPIVersion {
            close(fd)
            throw KVMError("KVM API version \(v), need \(Self.expectedAPIVersion)", v < 0 ? Errno(rawValue: -v) : .notSupported)
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value.
    public func capability(_ cap: Int32) -> Int32 {
        max(0, ckvm_check_extension(fd, Int(cap)))
    }

    public var maxVCPUs: Int {
        let m = capability(KVM_CAP_MAX_VCPUS)
        return Int(m > 0 ? m : capability(KVM_CAP_NR_VCPUS))
    }

    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try check(ckvm_get_vcpu_mmap_size(fd), "KVM_GET_VCPU_MMAP_SIZE"))
    }

    public func createVM() throws(KVMError) -> VirtualMachine {
        let vm = try check(ckvm_create_vm(fd), "KVM_CREATE_VM")
        return VirtualMachine(fd: vm, runSize: try vcpuMmapSize())
    }

    /// KVM_GET_SUPPORTED_CPUID as a raw `kvm_cpuid2` buffer ready for KVM_SET_CPUID2.
    public func supportedCPUID() throws(KVMError) -> CPUIDTable {
        let table = CPUIDTable(capacity: 256)
        _ = try check(ckvm_get_supported_cpuid(fd, table.pointer), "KVM_GET_SUPPORTED_CPUID")
        return table
    }
}

/// A `struct kvm_cpuid2` with its flexible entry array, owned.
public final class CPUIDTable: @unchecked Sendable {
    // @unchecked: written once at creation, then only read by KVM_SET_CPUID2 calls.
    let raw: UnsafeMutableRawPointer
    var pointer: UnsafeMutablePointer<kvm_cpuid2> { raw.assumingMemoryBound(to: kvm_cpuid2.self) }

    init(capacity: Int) {
        let bytes = MemoryLayout<kvm_cpuid2>.size + capacity * MemoryLayout<kvm_cpuid_entry2>.stride
        raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        pointer.pointee.nent = UInt32(capacity)
    }

    deinit { raw.deallocate() }

    public var count: Int { Int(pointer.pointee.nent) }
}
