import CSeccomp
import Sandbox
import Testing

/// The allowlist itself (Sources/Sandbox/SyscallTable.swift): every row names a real
/// system call and says why; what the issue forbids is in no row.
struct SyscallTableTests {
    @Test func everyRowResolvesAndSaysWhy() {
        for rule in syscallTable {
            #expect(cseccomp_syscall_number(rule.name) >= 0, "\(rule.name) is not a system call here")
            #expect(rule.why.count > 8, "\(rule.name) has no reason")
            #expect(!rule.roles.isEmpty, "\(rule.name) is allowed on no thread")
        }
    }

    @Test func forbiddenCallsAreInNoRow() {
        let names = Set(syscallTable.map(\.name))
        // openat's one row: the snapshot's new files, O_CREAT|O_EXCL only, the snapshot
        // writer only (not the console thread, which parses client requests and guest output).
        let openat = syscallTable.filter { $0.name == "openat" }
        #expect(openat.count <= 1 && openat.allSatisfy { $0.roles == [.snapshot] })
        for rule in openat {
            guard case .masked(2, let mask, let value) = rule.check, mask == cseccomp_O_CREAT_EXCL, value == mask else {
                Issue.record("openat allowed without O_CREAT|O_EXCL")
                continue
            }
        }
        for call in ["execve", "execveat", "open", "openat2", "creat", "socket", "socketpair", "connect",
                     "bind", "listen", "ptrace", "process_vm_readv", "process_vm_writev", "fork", "vfork", "clone3",
                     "mount", "chroot", "pivot_root", "setuid", "setgid", "kexec_load", "bpf", "perf_event_open",
                     "init_module", "finit_module"] {
            #expect(!names.contains(call), "\(call) must not be allowed")
        }
    }

    @Test func checkedCallsAreAlwaysChecked() {
        // No unconditional row for the calls whose arguments decide what they can do.
        for name in ["ioctl", "mmap", "mprotect", "clone", "prctl", "tgkill"] {
            for rule in syscallTable where rule.name == name {
                if case .any = rule.check { Issue.record("\(name) allowed without an argument check") }
            }
        }
    }

    @Test func onlyTheSnapshotWriterChangesTheFileSystem() {
        for call in ["openat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "ftruncate", "mincore"] {
            for rule in syscallTable where rule.name == call {
                #expect(rule.roles.isSubset(of: [.snapshot, .main]), "\(call) allowed on \(rule.roles)")
            }
        }
        // And the writer has no socket, event-loop or KVM calls: it only writes files.
        let writer = Set(syscallTable.filter { $0.roles.contains(.snapshot) }.map(\.name))
        for call in ["accept4", "recvmsg", "sendmsg", "epoll_wait", "ioctl", "io_uring_enter", "clone"] {
            #expect(!writer.contains(call), "\(call) allowed on the snapshot writer")
        }
    }

    @Test func vcpuThreadsOnlyEnterTheGuestAndServeExits() {
        let vcpu = Set(syscallTable.filter { $0.roles.contains(.vcpu) }.map(\.name))
        // No disk, socket or event-loop calls on the thread that runs guest-driven exits.
        for call in ["pread64", "pwrite64", "fsync", "fallocate", "io_uring_enter", "epoll_wait", "accept4",
                     "sendmsg", "recvmsg", "close", "clone"] {
            #expect(!vcpu.contains(call), "\(call) allowed on vCPU threads")
        }
        #expect(syscallTable.contains { $0.name == "ioctl" && $0.roles == [.vcpu] && $0.why.contains("guest") })
    }
}
