#if canImport(Glibc)
import Glibc
#endif
import CJail

/// The resource limits of one jailed VMM, in a cgroup of its own made under the cgroup
/// the caller is in (so a delegated subtree is respected), removed when the VMM is gone.
///
/// cgroup v2 where its controllers are enabled for the caller's cgroup, v1 hierarchies
/// otherwise, per controller: hosts mix them (this one mounts v1 memory, pids and cpu and
/// a v2 hierarchy with only hugetlb). What cannot be applied is reported, not fatal.
public struct JailLimits: Sendable, Equatable {
    /// memory.max (v2) / memory.limit_in_bytes (v1).
    public var memoryBytes: UInt64
    /// pids.max: the VMM's threads and a passt it started.
    public var pids: Int
    /// cpu.max (v2) / cpu.cfs_quota_us (v1): at most this many CPUs' time; nil = no limit.
    public var cpus: Int?

    /// What the VMM itself needs beyond guest RAM: its binary and heap (< 5 MiB), thread
    /// stacks, io_uring rings, KVM's page tables and the disks' page cache, which is
    /// charged to the cgroup but reclaimable.
    public static let overheadMiB: UInt64 = 64

    /// Guest RAM plus the overhead; a pid for every vCPU thread and a fixed number for the
    /// rest (devices, console, control, passt).
    public init(memoryMiB: Int, cpus: Int) {
        memoryBytes = (UInt64(memoryMiB) + Self.overheadMiB) << 20
        pids = 64 + cpus
        self.cpus = nil
    }
}

/// A per-VM cgroup (in every hierarchy that has a controller it uses).
public final class JailCgroup {
    /// Directories made, deepest last; removed in reverse.
    public private(set) var directories: [String] = []
    /// What was applied and what could not be ("memory: no controller"), for the report.
    public private(set) var applied: [String] = []
    public private(set) var missing: [String] = []

    /// A mounted hierarchy: cgroup2, or v1 with its controllers.
    struct Hierarchy {
        let mount: String
        let version2: Bool
        let controllers: Set<String>
        /// The caller's cgroup in it (from /proc/self/cgroup).
        let own: String
        var directory: String { mount + (own == "/" ? "" : own) }
    }

    /// The cgroup of the jail whose supervisor is `pid`.
    public static func name(supervisor pid: pid_t) -> String { "pvmm-\(pid)" }

    /// Removes what a supervisor killed before it could clean up left (the daemon, when
    /// the supervisor it started has ended: its cgroup is below the daemon's own).
    /// The VMM may still be exiting when its supervisor is reaped (both were killed):
    /// waits up to 5 s for each directory to empty. Blocks: call off any shared thread.
    public static func removeLeftover(name: String) {
        for h in hierarchies() { removeWhenEmpty(h.directory + "/" + name, reportAfter: 500) }
    }

    /// Removes the empty cgroups of supervisors that are gone (killed with SIGKILL, they
    /// could not remove their own; outside a daemon nobody else does): `pvmm-PID` below
    /// `parent` whose PID no longer exists. A busy one, or a live pid, is left alone.
    static func sweep(_ parent: String) {
        guard let dir = opendir(parent) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix("pvmm-"), let pid = pid_t(name.dropFirst(5)), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { rmdir(parent + "/" + name) }
        }
    }

    /// rmdir, retried every 10 ms while the cgroup is busy, up to `attempts`.
    static func removeWhenEmpty(_ d: String, reportAfter attempts: Int) {
        for attempt in 0..<attempts {
            if rmdir(d) == 0 || errno == ENOENT { return }
            if errno != EBUSY || attempt == attempts - 1 {
                writeStderr("pvmm: --jail: cannot remove cgroup \(d): \(String(cString: strerror(errno)))\n")
                return
            }
            usleep(10_000)
        }
    }

    /// Makes `name` in each hierarchy that offers a controller for `limits`, writes the
    /// limits. Nothing holds a process yet: `add` moves one in.
    public init(name: String, limits: JailLimits) {
        let hierarchies = Self.hierarchies()
        // v2 first where it has the controller.
        func place(_ controller: String) -> Hierarchy? {
            hierarchies.first { $0.version2 && $0.controllers.contains(controller) }
                ?? hierarchies.first { !$0.version2 && $0.controllers.contains(controller) }
        }
        var made: [String: String] = [:]
        func directory(for h: Hierarchy) -> String? {
            if let d = made[h.mount] { return d }
            Self.sweep(h.directory)
            let d = h.directory + "/" + name
            guard mkdir(d, 0o755) == 0 || errno == EEXIST else { return nil }
            directories.append(d)
            made[h.mount] = d
            return d
        }
        func set(_ controller: String, _ files: [(String, String)]) {
            guard let h = place(controller) else { missing.append("\(controller): no cgroup controller on this host"); return }
            if h.version2 {
                // The parent must hand the controller down (fails where it holds processes
                // itself and is not the root: then nothing can be delegated here).
                let control = h.directory + "/cgroup.subtree_control"
                let enabled = Self.read(control).split(separator: " ").map(String.init)
                if !enabled.contains(controller), cjail_write_file(control, "+" + controller) < 0 {
                    missing.append("\(controller): cgroup v2 cannot enable it below \(h.directory) (\(String(cString: strerror(errno))))")
                    return
                }
            }
            guard let d = directory(for: h) else {
                missing.append("\(controller): mkdir below \(h.directory): \(String(cString: strerror(errno)))")
                return
            }
            for (file, value) in files {
                let rc = cjail_write_file(d + "/" + file, value)
                if rc < 0 { missing.append("\(controller): \(file): \(String(cString: strerror(-rc)))") }
                else { applied.append("\(d)/\(file)=\(value)") }
            }
        }
        let mem = String(limits.memoryBytes)
        set("memory", place("memory")?.version2 == true ? [("memory.max", mem), ("memory.swap.max", "0")]
                                                          : [("memory.limit_in_bytes", mem)])
        set("pids", [("pids.max", String(limits.pids))])
        if let cpus = limits.cpus {
            let period = 100_000
            set("cpu", place("cpu")?.version2 == true ? [("cpu.max", "\(cpus * period) \(period)")]
                                                      : [("cpu.cfs_period_us", String(period)), ("cpu.cfs_quota_us", String(cpus * period))])
        }
    }

    /// Moves `pid` into the cgroup in every hierarchy.
    public func add(_ pid: pid_t) -> [String] {
        var failed: [String] = []
        for d in directories {
            let rc = cjail_write_file(d + "/cgroup.procs", String(pid))
            if rc < 0 { failed.append("\(d)/cgroup.procs: \(String(cString: strerror(-rc)))") }
        }
        return failed
    }

    /// Whether the memory controller killed a process for the limit (v2 memory.events
    /// `oom_kill`, v1 memory.oom_control `oom_kill`).
    public var outOfMemoryKills: Int {
        for d in directories {
            for file in ["memory.events", "memory.oom_control"] {
                for line in Self.read(d + "/" + file).split(separator: "\n") where line.hasPrefix("oom_kill ") {
                    if let n = Int(line.dropFirst(9)) { return n }
                }
            }
        }
        return 0
    }

    /// Removes the directories once no process is left in them (a memory cgroup may stay
    /// busy for a moment after its last process is reaped).
    public func remove() {
        for d in directories.reversed() { Self.removeWhenEmpty(d, reportAfter: 50) }
        directories = []
    }

    static func read(_ path: String) -> String {
        var buf = [CChar](repeating: 0, count: 8192)
        let n = buf.withUnsafeMutableBufferPointer { cjail_read_file(path, $0.baseAddress, Int($0.count)) }
        guard n > 0 else { return "" }
        return String(decoding: buf[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The cgroup hierarchies mounted here and the caller's place in each.
    static func hierarchies() -> [Hierarchy] {
        // /proc/self/cgroup: "ID:controllers:path"; v2 is "0::path".
        var ownV1: [String: String] = [:]
        var ownV2 = "/"
        for line in read("/proc/self/cgroup").split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty { ownV2 = parts[2] } else {
                for c in parts[1].split(separator: ",") { ownV1[String(c)] = parts[2] }
            }
        }
        var out: [Hierarchy] = []
        // /proc/self/mounts: "source target type options ...".
        for line in read("/proc/self/mounts").split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count >= 4 else { continue }
            if f[2] == "cgroup2" {
                let own = ownV2
                let controllers = Set(read(f[1] + (own == "/" ? "" : own) + "/cgroup.controllers")
                    .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
                out.append(Hierarchy(mount: f[1], version2: true, controllers: controllers, own: own))
            } else if f[2] == "cgroup" {
                let controllers = Set(f[3].split(separator: ",").map(String.init)).intersection(["memory", "pids", "cpu"])
                guard let c = controllers.first, let own = ownV1[c] else { continue }
                out.append(Hierarchy(mount: f[1], version2: false, controllers: controllers, own: own))
            }
        }
        return out
    }
}

func writeStderr(_ s: String) {
    _ = s.withCString { write(2, $0, strlen($0)) }
}
