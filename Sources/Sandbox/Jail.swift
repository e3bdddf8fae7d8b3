#if canImport(Glibc)
import Glibc
#endif
import CJail
import CSeccomp
import VMDefinition

/// Why the jail could not be set up; `step` names what failed.
public struct JailError: Error, Equatable, Sendable, CustomStringConvertible {
    public let step: String
    public let errno: Int32
    public var description: String { "--jail: \(step): \(String(cString: strerror(errno)))" }
}

/// `pvmm run --jail`: the VMM process in its own pid, mount, ipc, uts and net namespaces,
/// its root a small read-only tmpfs that holds only the kernel (and initrd), the disks
/// (read-only where the disk is) and /dev/kvm, running as an unprivileged uid/gid once /dev/kvm and the
/// images are open, in a cgroup of its own (docs/security.md). Its parent stays outside
/// as the supervisor: it forwards signals, removes the cgroup and reports how it ended.
public enum Jail {
    /// Where the jail's tmpfs is mounted before pivot_root: an existing directory, covered
    /// only in the VMM's own mount namespace, so nothing is created (or left) on the host.
    public static let mountPoint = "/tmp"
    /// The uid/gid a jailed VMM runs as without --uid/--gid: nobody/nogroup.
    public static let defaultID: UInt32 = 65534

    /// Enters the namespaces and the new root. Returns the definition with the paths as
    /// the VMM sees them inside (/kernel, /initrd, /disk0, ...). Call single-threaded, in the
    /// child of `fork`, after every tap is open and passt started (they stay in the host's
    /// net namespace).
    public static func enter(_ config: VMConfig) throws(JailError) -> VMConfig {
        func check(_ rc: Int32, _ step: String) throws(JailError) {
            if rc < 0 { throw JailError(step: step, errno: -rc) }
        }
        try check(cjail_unshare(), "new mount/ipc/uts/net namespaces")
        // Copies of what the root will hold, taken before the tmpfs covers the mount
        // point (an image may well live below it).
        var trees: [(tree: Int32, target: String, readOnly: Bool, device: Bool)] = []
        defer { for t in trees { close(t.tree) } }
        func clone(_ source: String, _ target: String, readOnly: Bool, device: Bool) throws(JailError) {
            let fd = cjail_clone_tree(source)
            try check(fd, "bind \(source)")
            trees.append((fd, target, readOnly, device))
        }
        var inside = config
        try clone(config.kernel, "/kernel", readOnly: true, device: false)
        inside.kernel = "/kernel"
        if let initrd = config.initrd {
            try clone(initrd, "/initrd", readOnly: true, device: false)
            inside.initrd = "/initrd"
        }
        for (i, disk) in config.disks.enumerated() {
            let target = "/disk\(i)"
            try clone(disk.path, target, readOnly: disk.readOnly, device: true)
            inside.disks[i].path = target
        }
        try clone("/dev/kvm", "/dev/kvm", readOnly: false, device: true)
        try check(cjail_mount_root(mountPoint), "tmpfs at \(mountPoint)")
        try check(mkdir(mountPoint + "/dev", 0o755) == 0 ? 0 : -errno, "mkdir /dev")
        for t in trees {
            try check(cjail_attach_tree(t.tree, mountPoint + t.target, 0, t.readOnly ? 1 : 0, t.device ? 1 : 0), "mount \(t.target)")
        }
        try check(cjail_pivot(mountPoint), "pivot_root")
        try check(cjail_no_new_privs(), "no_new_privs")
        return inside
    }

    /// Closes every inherited fd but stdin, stdout, stderr and `keeping` (taps handed
    /// over, a snapshot's memory image).
    public static func closeInheritedFDs(keeping: [Int32] = []) throws(JailError) {
        let rc = keeping.withUnsafeBufferPointer { cjail_close_except($0.baseAddress, Int32($0.count)) }
        if rc < 0 { throw JailError(step: "close_range", errno: -rc) }
    }

    /// The VMM's supervisor, outside the jail: the parent of `fork`.
    public struct Supervisor {
        public let child: pid_t
        /// Held open for the supervisor's life: the VMM checks it once it changed uid.
        public let lifeline: Int32
        public let cgroup: JailCgroup
        public let limits: JailLimits

        /// Waits for the VMM to end (signals passed on). `translated`: a signal the VMM
        /// did not catch, which killed it as SIGKILL (the supervisor should die of it).
        public func wait() throws(JailError) -> (status: Int32, translated: Int32) {
            var status: Int32 = 0, translated: Int32 = 0
            let rc = cjail_supervise(child, &status, &translated)
            if rc < 0 { throw JailError(step: "waitpid", errno: -rc) }
            return (status, translated)
        }
    }

    /// Forks the VMM as the first process of a new pid namespace, in a cgroup with
    /// `limits` (what cannot be applied is written to stderr). Returns nil in the child
    /// (go on building the VM there) and the supervisor in the parent.
    public static func fork(limits: JailLimits) throws(JailError) -> Supervisor? {
        let cgroup = JailCgroup(name: JailCgroup.name(supervisor: getpid()), limits: limits)
        for m in cgroup.missing { writeStderr("pvmm: --jail: not applied: \(m)\n") }
        var go: Int32 = -1
        let pid = cjail_fork(&go)
        if pid < 0 { cgroup.remove(); throw JailError(step: "fork into a pid namespace", errno: -pid) }
        if pid == 0 { return nil }
        // In the cgroup before it allocates anything: it waits for the go byte.
        for f in cgroup.add(pid) { writeStderr("pvmm: --jail: not applied: \(f)\n") }
        _ = cjail_go(go)
        return Supervisor(child: pid, lifeline: go, cgroup: cgroup, limits: limits)
    }

    /// Dies of `signal` (a supervisor mirroring its VMM). Does not return.
    public static func dieOf(_ signal: Int32) -> Never {
        var core = rlimit(rlim_cur: 0, rlim_max: 0)
        _ = setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &core)
        cseccomp_die_of(signal)
        _exit(128 + signal)
    }
    /// Limits for the rest of the process's life: no core dumps (they would hold guest
    /// RAM), a bounded number of open files.
    public static func limitResources(maxFiles: UInt = 1024) throws(JailError) {
        var core = rlimit(rlim_cur: 0, rlim_max: 0)
        if setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &core) != 0 { throw JailError(step: "RLIMIT_CORE", errno: errno) }
        var files = rlimit(rlim_cur: rlim_t(maxFiles), rlim_max: rlim_t(maxFiles))
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &files) != 0 { throw JailError(step: "RLIMIT_NOFILE", errno: errno) }
    }

    /// Gives up root for good, once /dev/kvm and the images are open.
    public static func dropPrivileges(uid: UInt32, gid: UInt32) throws(JailError) {
        let rc = cjail_drop(uid, gid)
        if rc < 0 { throw JailError(step: "drop to uid \(uid) gid \(gid)", errno: -rc) }
        let armed = cjail_rearm_death_signal()
        if armed < 0 { throw JailError(step: "the supervisor is gone (parent-death signal)", errno: -armed) }
    }
}
