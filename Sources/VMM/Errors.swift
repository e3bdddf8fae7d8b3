import Boot
import VMDefinition
import GuestMemory
import HostNet
import KVM
import Snapshot

/// Why a VM could not be built or run.
public enum VMMError: Error, CustomStringConvertible, Sendable {
    /// A field of the definition (a JSON field, a `pvmm run` flag) is unusable.
    case invalidConfig(ConfigError)
    /// The kernel file could not be read.
    case kernelUnreadable(path: String, message: String)
    /// The kernel file is not something we can boot.
    case badKernel(path: String, error: BootError)
    /// /dev/kvm is missing, not permitted or unusable.
    case kvmUnavailable(message: String)
    /// A KVM ioctl failed while building or running the VM (a pvmm or host problem).
    case kvm(KVMError)
    case memory(GuestMemoryError)
    case thread(String)
    /// A lifecycle operation the VM's state does not allow (pause a stopped VM).
    case conflict(LifecycleConflict)
    /// A snapshot to restore is unusable (truncated, corrupt, another version or host,
    /// a disk that changed): the user's input, status 2.
    case snapshot(SnapshotError)
    /// Taking a snapshot failed on the host (the directory, a write, a flush).
    case snapshotWrite(String)
    /// A net backend could not be opened (`field` is `nets[i]`).
    case network(field: String, HostNetError)

    /// Problems in what the user gave us: `pvmm run` exits with status 2 for these.
    public var isUsageError: Bool {
        switch self {
        case .invalidConfig, .kernelUnreadable, .badKernel, .kvmUnavailable, .snapshot, .network: true
        case .kvm, .memory, .thread, .conflict, .snapshotWrite: false
        }
    }

    /// As `description`, with definition fields spelled as `pvmm run` flags.
    public var flagDescription: String {
        if case .invalidConfig(let e) = self { return e.flagDescription }
        if case let .network(field, e) = self { return ConfigError(field: field, message: e.description).flagDescription }
        return description
    }

    public var description: String {
        switch self {
        case let .invalidConfig(e): e.description
        case let .kernelUnreadable(path, message): "kernel \(path): \(message)"
        case let .badKernel(path, error): "kernel \(path): \(error)"
        case let .kvmUnavailable(message): message
        case let .kvm(e): "KVM: \(e)"
        case let .memory(e): "guest memory: \(e)"
        case let .thread(m): m
        case let .conflict(c): c.description
        case let .snapshot(e): e.description
        case let .snapshotWrite(m): "snapshot: \(m)"
        case let .network(field, e): "\(field): \(e)"
        }
    }
}
