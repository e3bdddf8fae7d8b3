#if canImport(Glibc)
import Glibc
#endif
import CJail
import VMDefinition

/// Why the jail could not be set up; `step` names what failed.
public struct JailError: Error, Equatable, Sendable, CustomStringConvertible {
    public let step: String
    public let errno: Int32
    public var description: String { "--jail: \(step): \(String(cString: strerror(errno)))" }
}

/// `pvmm run --jail`: the VMM process in its own mount, ipc and uts namespaces, its root a
/// small read-only tmpfs that holds only the kernel (and initrd), the disks (read-only where the disk
/// is) and /dev/kvm, running as an unprivileged uid/gid once /dev/kvm and the images are
/// open (docs/security.md). Not yet: a pid namespace, a net namespace, cgroup limits.
public enum Jail {
    /// Where the jail's tmpfs is mounted before pivot_root (in the VMM's own mount
    /// namespace, so jails never see each other's; the empty directory stays on the host).
    public static let mountPoint = "/run/pvmm-jail"
    /// The uid/gid a jailed VMM runs as without --uid/--gid: nobody/nogroup.
    public static let defaultID: UInt32 = 65534

    /// Enters the namespaces and the new root. Returns the definition with the paths as
    /// the VMM sees them inside (/kernel, /initrd, /disk0, ...). Call single-threaded.
    public static func enter(_ config: VMConfig) throws(JailError) -> VMConfig {
        func check(_ rc: Int32, _ step: String) throws(JailError) {
            if rc < 0 { throw JailError(step: step, errno: -rc) }
        }
        _ = mkdir(mountPoint, 0o755)
        try check(cjail_unshare(), "new mount/ipc/uts namespaces")
        try check(cjail_mount_root(mountPoint), "tmpfs at \(mountPoint)")
        var inside = config
        try check(cjail_bind(config.kernel, mountPoint + "/kernel", 0, 1, 0), "bind \(config.kernel)")
        inside.kernel = "/kernel"
        if let initrd = config.initrd {
            try check(cjail_bind(initrd, mountPoint + "/initrd", 0, 1, 0), "bind \(initrd)")
            inside.initrd = "/initrd"
        }
        for (i, disk) in config.disks.enumerated() {
            let target = "/disk\(i)"
            try check(cjail_bind(disk.path, mountPoint + target, 0, disk.readOnly ? 1 : 0, 1), "bind \(disk.path)")
            inside.disks[i].path = target
        }
        try check(mkdir(mountPoint + "/dev", 0o755) == 0 ? 0 : -errno, "mkdir /dev")
        try check(cjail_bind("/dev/kvm", mountPoint + "/dev/kvm", 0, 0, 1), "bind /dev/kvm")
        try check(cjail_pivot(mountPoint), "pivot_root")
        try check(cjail_no_new_privs(), "no_new_privs")
        return inside
    }

    /// Closes every inherited fd but stdin, stdout and stderr.
    public static func closeInheritedFDs() throws(JailError) {
        let rc = cjail_close_from(3)
        if rc < 0 { throw JailError(step: "close_range", errno: -rc) }
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
    }
}
