#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Sandbox
import SystemPackage

/// What a VMM thread does. Every thread the VMM starts goes through `spawnThread`, so a
/// per-role policy (the sandbox issue's seccomp filters, CPU affinity) has one place to
/// hang on: the role is known on the new thread before its body runs.
public enum ThreadRole: Int, Sendable, CaseIterable {
    /// Runs KVM_RUN for one vCPU.
    case vcpu
    /// A device's event loop (virtio queues, the IRQ probe).
    case device
    /// Console and control: the console-output/control-socket loop, the terminal reader.
    case console
    /// Writes a snapshot's files (SnapshotWriter): the one thread that may create files.
    case snapshot
    /// The process's main thread (the supervisor); never spawned, listed for policies.
    case main
}

/// A started thread; `join()` waits for its body to return.
public struct SpawnedThread: @unchecked Sendable {
    // @unchecked: pthread_t is an integer handle; joining from one thread at a time is the
    // caller's contract (the VM joins each thread once, on the supervisor).
    public let handle: pthread_t
    public let name: String
    public let role: ThreadRole

    public func join() { pthread_join(handle, nil) }
}

private final class ThreadStart {
    let name: String
    let role: ThreadRole
    let body: () -> Void
    init(name: String, role: ThreadRole, body: @escaping () -> Void) {
        self.name = name
        self.role = role
        self.body = body
    }
}

/// The role of the calling thread (nil for threads pvmm did not start, i.e. main).
nonisolated(unsafe) private var currentRoleStorage: pthread_key_t = {
    var k = pthread_key_t()
    pthread_key_create(&k, nil)
    return k
}()

public var currentThreadRole: ThreadRole {
    guard let p = pthread_getspecific(currentRoleStorage) else { return .main }
    return ThreadRole(rawValue: Int(bitPattern: p) - 1) ?? .main
}

/// Starts a joinable thread named `name` (Linux keeps its first 15 bytes) in `role` running `body`.
/// The kick signal is unblocked on it: a parent that blocked it must not stop a vCPU
/// (or any thread that later runs one) from being kicked out of KVM_RUN.
public func spawnThread(name: String, role: ThreadRole, _ body: @escaping () -> Void) throws(VMMError) -> SpawnedThread {
    let start = Unmanaged.passRetained(ThreadStart(name: name, role: role, body: body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        let s = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
        _ = ckvm_set_thread_name(s.name)
        pthread_setspecific(currentRoleStorage, UnsafeRawPointer(bitPattern: s.role.rawValue + 1))
        _ = ckvm_unblock_kick_signal()
        // The role's seccomp filter before the body touches guest-controlled data (rings,
        // exits, host input for the guest); a no-op until pvmm-vmm installed the
        // process-wide filter (Sandbox/SyscallTable.swift).
        Seccomp.enterRoleOrDie(s.role.seccompRole, label: String(s.name.prefix(15)))
        s.body()
        return nil
    }, start)
    if rc != 0 {
        Unmanaged<ThreadStart>.fromOpaque(start).release()
        throw .thread("could not start thread \(name): \(Errno(rawValue: rc))")
    }
    return SpawnedThread(handle: tid, name: name, role: role)
}

extension ThreadRole {
    /// The rows of Sandbox/SyscallTable.swift this role's threads keep.
    var seccompRole: SeccompRole {
        switch self {
        case .vcpu: .vcpu
        case .device: .device
        case .console: .console
        case .snapshot: .snapshot
        case .main: .main
        }
    }
}
