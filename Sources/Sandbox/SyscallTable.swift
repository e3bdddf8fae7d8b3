#if canImport(Glibc)
import Glibc
#endif
import CSeccomp

/// Which VMM threads a system call is allowed on. The process-wide filter (installed on
/// the main thread before any vCPU runs, inherited by every thread started later) allows
/// the union of all rows; each started thread then adds the filter of its own role, so a
/// vCPU thread, which runs guest-driven exits, cannot do what only a device thread needs.
public enum SeccompRole: String, Sendable, CaseIterable {
    /// Runs KVM_RUN for one vCPU and emulates the port/MMIO exits.
    case vcpu
    /// A device's event loop: virtio queues against disk images, taps, the IRQ probe.
    case device
    /// Console and control: the terminal reader, console output, the control socket.
    case console
    /// Writes a snapshot's files for the control socket (VMM/SnapshotWriter.swift): the
    /// one role that may create files, on a thread that parses no input.
    case snapshot
    /// The main thread (the supervisor): starts and joins the others, restores the
    /// terminal. It keeps only the process-wide filter.
    case main
}

/// One allowlist row: a system call, an optional argument check, the roles it is allowed
/// on, and why it is there at all.
public struct SyscallRule: Sendable {
    public enum Check: Sendable {
        case any
        /// Argument `index` & `mask` == `value`.
        case masked(index: UInt32, mask: UInt64, value: UInt64)
    }

    public let name: String
    public let check: Check
    public let roles: Set<SeccompRole>
    public let why: String

    init(_ name: String, _ roles: Set<SeccompRole>, _ why: String) {
        self.init(name, .any, roles, why)
    }

    init(_ name: String, _ check: Check, _ roles: Set<SeccompRole>, _ why: String) {
        self.name = name
        self.check = check
        self.roles = roles
        self.why = why
    }
}

private let all: Set<SeccompRole> = Set(SeccompRole.allCases)
private let notVCPU: Set<SeccompRole> = [.device, .console, .main]
/// The snapshot writer joins these: it waits on an eventfd and closes the files it made.
private let notVCPUWithWriter = notVCPU.union([.snapshot])

private func ioctl(_ request: UInt, _ roles: Set<SeccompRole>, _ why: String) -> SyscallRule {
    // The request is an int in the kernel: compare the low 32 bits only.
    SyscallRule("ioctl", .masked(index: 1, mask: 0xFFFF_FFFF, value: UInt64(request)), roles, why)
}

private let noExec = SyscallRule.Check.masked(index: 2, mask: cseccomp_PROT_EXEC, value: 0)

/// Everything a running VMM may do. Not here, so refused on every thread: execve and
/// execveat, open/openat/creat (no new paths once the VM runs: images, /dev/kvm and taps
/// are opened before), socket/socketpair/connect/bind/listen (sockets are created before),
/// ptrace/process_vm_*, fork/vfork and clone without CLONE_THREAD, mount, chroot,
/// setuid and friends, kexec, bpf, perf_event_open, mmap/mprotect with PROT_EXEC,
/// ioctls other than those listed. clone3 returns ENOSYS (its flags sit in memory a
/// filter cannot read) so libc falls back to clone.
public let syscallTable: [SyscallRule] = [
    // Memory: malloc, thread stacks, guest RAM is mapped before. Never executable.
    SyscallRule("brk", all, "malloc grows the heap"),
    SyscallRule("mmap", noExec, all, "malloc arenas and thread stacks; never PROT_EXEC"),
    SyscallRule("mprotect", noExec, all, "thread stack guard pages; never PROT_EXEC"),
    SyscallRule("munmap", all, "malloc returns memory"),
    SyscallRule("mremap", all, "realloc of large blocks"),
    SyscallRule("madvise", all, "malloc and thread exit release pages"),

    // Threads and synchronisation.
    SyscallRule("futex", all, "Mutex, condition variables, pthread_join"),
    SyscallRule("clone", .masked(index: 0, mask: cseccomp_CLONE_THREAD, value: cseccomp_CLONE_THREAD), [.main],
                "pthread_create of vCPU and device threads after the filter; threads only, never processes"),
    SyscallRule("set_robust_list", all, "every new thread registers its robust futex list"),
    SyscallRule("rseq", all, "every new thread registers restartable sequences (glibc)"),
    SyscallRule("prctl", .masked(index: 0, mask: 0xFFFF_FFFF, value: 15), all,
                "PR_SET_NAME only: threads name themselves (vcpu0, pvmm-blk0) before their role filter"),
    SyscallRule("seccomp", all, "each started thread adds its role filter (a filter can only narrow)"),
    SyscallRule("sched_yield", all, "spin loops in the runtime"),
    SyscallRule("gettid", all, "pthread and the seccomp reporter"),
    SyscallRule("getpid", all, "the vCPU kick and the seccomp reporter"),
    SyscallRule("tgkill", .masked(index: 0, mask: 0xFFFF_FFFF, value: UInt64(UInt32(bitPattern: getpid()))), all,
                "pthread_kill of our own threads only: kicking a vCPU out of KVM_RUN; the reporter re-raising SIGSYS"),
    SyscallRule("exit", all, "a thread ends"),
    SyscallRule("kill", [.main], "ending the passt helper the VMM started for a --net passt (its pid is the VMM's child)"),
    SyscallRule("wait4", [.main], "reaping that passt helper"),
    SyscallRule("waitid", [.main], "reaping that passt helper (newer libc)"),
    SyscallRule("exit_group", all, "the VMM exits with the VM's status"),

    // Signals.
    SyscallRule("rt_sigprocmask", all, "threads unblock the kick signal; the reporter unblocks SIGSYS"),
    SyscallRule("rt_sigaction", all, "the kick handler at start; the reporter resets SIGSYS to its default"),
    SyscallRule("rt_sigreturn", all, "return from the kick signal's handler"),
    SyscallRule("sigaltstack", all, "the Swift runtime's and glibc's signal stacks"),

    // Time.
    SyscallRule("clock_gettime", all, "timestamps when the vDSO is not used"),
    SyscallRule("clock_nanosleep", all, "bounded waits (pause, stop)"),
    SyscallRule("nanosleep", all, "bounded waits"),

    // I/O on fds opened before the filter.
    SyscallRule("read", all, "eventfds (notifications, kicks), stdin, taps"),
    SyscallRule("write", all, "eventfds (irqfd, queue wake-ups), console output, stderr, taps"),
    SyscallRule("readv", notVCPU, "taps and sockets carry frames in pieces"),
    SyscallRule("writev", notVCPU, "taps, sockets and console output in pieces"),
    SyscallRule("pread64", [.device, .console], "a snapshot settles block I/O on the console thread; virtio-blk reads of the image"),
    SyscallRule("pwrite64", [.device, .console, .snapshot], "virtio-blk writes of the image (and settling them for a snapshot, on the console thread); a snapshot's memory image"),
    SyscallRule("preadv", [.device, .console], "a snapshot settles block I/O on the console thread; virtio-blk reads into several guest buffers"),
    SyscallRule("pwritev", [.device, .console], "a snapshot settles block I/O on the console thread; virtio-blk writes from several guest buffers"),
    SyscallRule("preadv2", [.device, .console], "a snapshot settles block I/O on the console thread; virtio-blk reads into several guest buffers (glibc's preadv)"),
    SyscallRule("pwritev2", [.device, .console], "a snapshot settles block I/O on the console thread; virtio-blk writes from several guest buffers (glibc's pwritev)"),
    SyscallRule("fsync", [.device, .console, .snapshot], "virtio-blk FLUSH; disks flushed for a snapshot; a snapshot's files before rename"),
    SyscallRule("fdatasync", [.device, .console], "virtio-blk FLUSH; disks flushed for a snapshot"),
    SyscallRule("fallocate", [.device], "virtio-blk DISCARD and WRITE_ZEROES"),
    SyscallRule("io_uring_enter", [.device, .console], "a snapshot settles block I/O on the console thread; the parallel block backend submits and reaps"),
    SyscallRule("epoll_wait", notVCPU, "device and console event loops"),
    SyscallRule("epoll_pwait", notVCPU, "device and console event loops (newer libc)"),
    SyscallRule("epoll_ctl", notVCPU, "event loops add and remove fds they already own"),
    SyscallRule("poll", notVCPUWithWriter, "the terminal reader waits for stdin"),
    SyscallRule("ppoll", notVCPUWithWriter, "the terminal reader waits for stdin (newer libc)"),
    SyscallRule("close", notVCPUWithWriter, "event loops and connections close their own fds"),
    SyscallRule("fstat", notVCPUWithWriter, "stdio buffering looks at stdout"),
    SyscallRule("newfstatat", notVCPUWithWriter, "stdio buffering looks at stdout (fstat via newfstatat)"),
    SyscallRule("lseek", notVCPUWithWriter, "stdio positions on stdout/stderr"),
    SyscallRule("getrandom", all, "Swift's random number generator"),
    SyscallRule("ftruncate", [.main, .snapshot], "--state-dir: rewriting exit.json/console.log created at start; a snapshot's sparse memory image"),
    SyscallRule("rename", [.main, .snapshot], "publishing a snapshot's files and --state-dir's exit.json/console.log (written under a temporary name)"),
    SyscallRule("renameat", [.main, .snapshot], "as rename (libc's rename on newer kernels; --state-dir relative to DIR's fd)"),
    SyscallRule("renameat2", [.main, .snapshot], "as rename (libc's rename on newer kernels)"),
    SyscallRule("unlink", [.main, .snapshot], "removing a temporary file that could not be written (snapshot, --state-dir)"),
    // A snapshot (the control socket's `snapshot`, its files written by the snapshot
    // thread while the console thread waits): the one place a running VMM creates files. openat only with O_CREAT|O_EXCL (DIR/.memory.tmp,
    // DIR/.state.tmp): it fails on any path that exists, so nothing can be opened for
    // reading or writing.
    SyscallRule("openat", .masked(index: 2, mask: cseccomp_O_CREAT_EXCL, value: cseccomp_O_CREAT_EXCL), [.snapshot],
                "snapshot: creating the memory image and the state file"),
    SyscallRule("mkdir", [.snapshot], "snapshot: the directory"),
    SyscallRule("mkdirat", [.snapshot], "snapshot: the directory (libc's mkdir on newer kernels)"),
    SyscallRule("mincore", [.snapshot], "snapshot: skipping guest pages the host never populated"),
    SyscallRule("unlinkat", [.main, .snapshot], "as unlink (newer libc; --state-dir relative to DIR's fd)"),
    // Sockets created before the filter: the control socket and passt.
    SyscallRule("accept4", [.console], "control socket clients (the listening socket exists already)"),
    SyscallRule("accept", [.console], "control socket clients (Swift's Glibc accept)"),
    SyscallRule("fcntl", notVCPU, "non-blocking and close-on-exec flags of accepted connections"),
    SyscallRule("getsockopt", [.console], "peer credentials and errors of a control connection"),
    SyscallRule("recvfrom", [.console, .device], "control requests; passt frames"),
    SyscallRule("sendto", [.console, .device], "control replies; passt frames"),
    SyscallRule("recvmsg", [.console, .device], "control requests; passt frames"),
    SyscallRule("sendmsg", [.console, .device], "control replies; passt frames"),
    SyscallRule("shutdown", [.console], "closing a control connection"),

    // ioctls: only the requests the VMM makes after start. vCPU and irqchip state is read
    // and written by the vCPU threads and by whichever thread runs a pause, a reset or a
    // reboot: the supervisor (main) or the control socket's thread (console).
    ioctl(cseccomp_KVM_RUN, [.vcpu], "enter the guest"),
    ioctl(cseccomp_KVM_GET_REGS, [.vcpu, .console, .main], "crash reports; vCPU state at reboot"),
    ioctl(cseccomp_KVM_SET_REGS, [.vcpu, .console, .main], "vCPU power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_SREGS, [.vcpu, .console, .main], "crash reports; vCPU state at reboot"),
    ioctl(cseccomp_KVM_SET_SREGS, [.vcpu, .console, .main], "vCPU power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_MSRS, [.vcpu, .console, .main], "vCPU state at reboot"),
    ioctl(cseccomp_KVM_SET_MSRS, [.vcpu, .console, .main], "vCPU power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_MP_STATE, [.vcpu, .console, .main], "vCPU state (halted, runnable)"),
    ioctl(cseccomp_KVM_SET_MP_STATE, [.vcpu, .console, .main], "vCPU power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_LAPIC, [.vcpu, .console, .main], "LAPIC state at reboot"),
    ioctl(cseccomp_KVM_SET_LAPIC, [.vcpu, .console, .main], "LAPIC power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_VCPU_EVENTS, [.vcpu, .console, .main], "pending events at reboot"),
    ioctl(cseccomp_KVM_SET_VCPU_EVENTS, [.vcpu, .console, .main], "pending events cleared at reboot"),
    ioctl(cseccomp_KVM_GET_FPU, [.vcpu, .console, .main], "FPU state at reboot"),
    ioctl(cseccomp_KVM_SET_FPU, [.vcpu, .console, .main], "FPU power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_XSAVE, [.vcpu, .console, .main], "XSAVE state at reboot"),
    ioctl(cseccomp_KVM_SET_XSAVE, [.vcpu, .console, .main], "XSAVE power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_XCRS, [.vcpu, .console, .main], "XCR0 for a snapshot and at reboot"),
    ioctl(cseccomp_KVM_SET_XCRS, [.vcpu, .console, .main], "XCR0 power-on state at reboot"),
    ioctl(cseccomp_KVM_KVMCLOCK_CTRL, [.vcpu, .console, .main], "tell the guest's kvmclock the vCPU was paused"),
    ioctl(cseccomp_KVM_IRQ_LINE, [.vcpu, .console, .main], "the 8250's interrupt line (guest writes; host input)"),
    ioctl(cseccomp_KVM_GET_IRQCHIP, [.console, .main], "irqchip state at reboot"),
    ioctl(cseccomp_KVM_SET_IRQCHIP, [.console, .main], "irqchip power-on state at reboot"),
    ioctl(cseccomp_KVM_GET_CLOCK, [.console, .main], "kvmclock across pause"),
    ioctl(cseccomp_KVM_SET_CLOCK, [.console, .main], "kvmclock across pause"),
    ioctl(cseccomp_KVM_IOEVENTFD, [.main], "the supervisor adds and removes one scratch ioeventfd once the VM runs, so KVM's frees of the set-up's I/O buses do not delay the exit (VM.settleIOBus)"),
    ioctl(cseccomp_TCGETS, [.console, .main], "isatty and the terminal's mode"),
    ioctl(cseccomp_TCSETS, [.console, .main], "raw mode on, and restored on every exit path"),
    ioctl(cseccomp_TCSETSW, [.console, .main], "terminal mode restored"),
    ioctl(cseccomp_TCSETSF, [.console, .main], "terminal mode restored"),
    ioctl(cseccomp_TIOCGWINSZ, [.console, .main], "terminal size"),
    ioctl(cseccomp_FIONREAD, [.console, .device], "bytes waiting on stdin or a tap"),
    ioctl(cseccomp_FIONBIO, notVCPU, "non-blocking mode of an fd already open"),
    ioctl(cseccomp_TUNSETOFFLOAD, [.device], "virtio-net: the tap's offloads follow the features the driver accepted"),
    ioctl(cseccomp_TUNSETVNETHDRSZ, [.device], "virtio-net: the tap's vnet header size follows the negotiated features"),
]
