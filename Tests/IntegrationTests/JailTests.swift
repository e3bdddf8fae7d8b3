import Foundation
import Testing

/// `pvmm run --jail` / `pvmm-vmm --jail` on real KVM (Sources/Sandbox/Jail.swift,
/// docs/security.md), checked from the host: the VMM is the first process of its own pid
/// namespace, in its own mount, ipc, uts and net namespaces, runs as an unprivileged uid,
/// its root holds only the kernel, the disks and /dev/kvm, it sits in a cgroup of its own
/// with memory and pids limits, and nothing of the jail is left on the host at the end.
@Suite(.serialized) struct JailTests {
    static func field(_ pid: pid_t, _ name: String) throws -> String {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return line.split(separator: ":", maxSplits: 1).dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    }

    static func entries(_ path: String) throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: path))
    }

    /// The jailed VMM: the one child of the supervisor `pid` (the process pvmm started).
    static func vmm(of supervisor: pid_t) throws -> pid_t {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let children = (try? String(contentsOfFile: "/proc/\(supervisor)/task/\(supervisor)/children", encoding: .utf8)) ?? ""
            if let first = children.split(separator: " ").first, let pid = pid_t(first) { return pid }
            usleep(20_000)
        }
        throw HarnessError(description: "supervisor \(supervisor) has no child")
    }

    static func namespace(_ pid: pid_t, _ kind: String) throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")
    }

    /// Where `pid` sits in the v1/v2 hierarchy of `controller`: the directory under /sys/fs/cgroup.
    static func cgroupDirectory(_ pid: pid_t, _ controller: String) throws -> String? {
        let lines = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8).split(separator: "\n")
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1].split(separator: ",").contains(Substring(controller)) else { continue }
            return "/sys/fs/cgroup/\(controller)\(parts[2])"
        }
        return nil
    }

    static func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func jailedVMMHasOnlyItsFilesNamespacesAndACgroup() throws {
        let disk = try Paths.temporaryFile("jail.img", [UInt8](repeating: 0x33, count: 1 << 20))
        let vm = try bootPVMM(["--jail", "--disk", disk + ",readonly"])
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        #expect(try Self.field(pid, "Uid").hasPrefix("65534\t"), "the VMM still runs as root")
        #expect(try Self.field(pid, "Gid").hasPrefix("65534\t"))
        #expect(try Self.field(pid, "NoNewPrivs") == "1")
        #expect(try Self.field(pid, "Seccomp") == "2")
        // The first process of its own pid namespace; every namespace differs from the host's.
        #expect(try Self.field(pid, "NSpid") == "\(pid)\t1")
        for kind in ["pid", "mnt", "net", "ipc", "uts"] {
            #expect(try Self.namespace(pid, kind) != Self.namespace(getpid(), kind), "\(kind) namespace is the host's")
        }
        // Its net namespace is empty: only a loopback device, down.
        let dev = try String(contentsOfFile: "/proc/\(pid)/net/dev", encoding: .utf8)
        #expect(dev.split(separator: "\n").dropFirst(2).map { $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) } == ["lo"], "\(dev)")
        // The supervisor outside: the process pvmm run became, root, unfiltered, named pvmm-jail.
        #expect(Self.read("/proc/\(vm.pid)/comm") == "pvmm-jail")
        #expect(try Self.namespace(vm.pid, "net") == Self.namespace(getpid(), "net"))
        // Its root: the kernel, the disk, /dev with only kvm; no host path reachable.
        #expect(try Self.entries("/proc/\(pid)/root") == ["kernel", "disk0", "dev"])
        #expect(try Self.entries("/proc/\(pid)/root/dev") == ["kvm"])
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)/root/etc/passwd"))
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)/root" + disk))
        // The read-only disk is a read-only mount; the root is read-only too.
        let mounts = try String(contentsOfFile: "/proc/\(pid)/mounts", encoding: .utf8).split(separator: "\n")
        #expect(mounts.contains { $0.contains(" /disk0 ") && $0.contains(" ro,") }, "mounts: \(mounts)")
        #expect(mounts.contains { $0.hasPrefix("pvmm-jail / tmpfs ro,") }, "mounts: \(mounts)")
        // Its cgroup: made for it below ours, guest RAM (128 MiB) + 64 MiB, pids 64 + vCPUs.
        let memory = try #require(try Self.cgroupDirectory(pid, "memory"))
        #expect(memory == (try Self.cgroupDirectory(getpid(), "memory").map { $0 + "/pvmm-\(vm.pid)" }))
        #expect(Self.read(memory + "/memory.limit_in_bytes") == String((128 + 64) << 20))
        let pids = try #require(try Self.cgroupDirectory(pid, "pids"))
        #expect(pids.hasSuffix("/pvmm-\(vm.pid)"))
        #expect(Self.read(pids + "/pids.max") == "65")
        // The guest reads its disk through the jail.
        #expect(try vm.command("blk").contains("blk0: 2048 sectors (1 MiB) ro"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        // Nothing left: the cgroups are removed.
        #expect(!FileManager.default.fileExists(atPath: memory))
        #expect(!FileManager.default.fileExists(atPath: pids))
    }

    /// The jail makes no directory on the host (an earlier version left an empty
    /// /run/pvmm-jail behind): pvmm runs with an empty /run of its own (other suites may
    /// run older jails at the same time), which stays empty while the VM runs and after.
    @Test func theJailMakesNothingOnTheHost() throws {
        let vm = try Child(["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                            "mount -t tmpfs pvmm-test-run /run && \(Paths.pvmm) run --kernel \(Paths.guest) --jail && echo \"run: [$(ls -A /run)]\""])
        try vm.expect("pvos> ")
        // sh (vm.pid) -> the supervisor (pvmm run execs pvmm-vmm) -> the VMM.
        let supervisor = try Self.vmm(of: vm.pid)
        #expect(Self.read("/proc/\(supervisor)/comm") == "pvmm-jail")
        #expect(try Self.entries("/proc/\(supervisor)/root/run").isEmpty)
        let jailed = try Self.vmm(of: supervisor)
        #expect(try Self.entries("/proc/\(jailed)/root") == ["kernel", "dev"])
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        #expect(vm.text.contains("run: []"), "\(vm.text)")
    }

    @Test func initrdIsInTheJailReadOnlyAndReachesTheGuest() throws {
        let bytes = randomBytes(100_003)
        let path = try Paths.temporaryFile("jail-initrd.bin", bytes)
        let vm = try bootPVMM(["--jail", "--initrd", path])
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        #expect(try Self.entries("/proc/\(pid)/root") == ["kernel", "initrd", "dev"])
        let mounts = try String(contentsOfFile: "/proc/\(pid)/mounts", encoding: .utf8).split(separator: "\n")
        #expect(mounts.contains { $0.contains(" /initrd ") && $0.contains(" ro,") }, "mounts: \(mounts)")
        InitrdTests.check(try vm.command("info"), bytes, "jailed")
        // A reboot places it again (read once at build, nothing opened in the jail later).
        vm.send("reboot\n")
        try vm.expect("pvos> ")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func uidAndGidAreThoseGiven() throws {
        let vm = try bootPVMM(["--jail", "--uid", "4321", "--gid", "4322"])
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        #expect(try Self.field(pid, "Uid").hasPrefix("4321\t"))
        #expect(try Self.field(pid, "Gid").hasPrefix("4322\t"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        // Without --jail the VMM keeps its caller's uid (the baseline the test compares to).
        let free = try bootPVMM()
        try free.expect("pvos> ")
        #expect(try Self.field(free.pid, "Uid").hasPrefix("\(getuid())\t"))
        free.send("poweroff\n")
        #expect(try free.wait() == 0)
    }

    @Test func uidWithoutJailIsAUsageError() throws {
        let (status, stderr) = try runPVMMToEnd(["--uid", "5"])
        #expect(status == 2)
        #expect(stderr.contains("--uid: only with --jail"), "stderr: \(stderr)")
    }

    /// The daemon's way: control socket and state directory outside the jail, opened before it.
    @Test func controlSocketAndStateDirectoryWorkFromTheJail() throws {
        let vm = try ControlledVM(extra: ["--jail"])
        let con = try vm.waitForPrompt()
        #expect(try con.command("echo jailed").contains("jailed\r\n"))
        let status = try vm.request(#"{"op":"status"}"#)
        // The pid to signal: the supervisor (the VMM itself is pid 1 of its namespace).
        #expect(status["pid"] as? Int == Int(vm.child.pid), "\(status)")
        let pid = try Self.vmm(of: vm.child.pid)
        #expect(try Self.entries("/proc/\(pid)/root") == ["kernel", "dev"])
        #expect(try vm.request(#"{"op":"stop"}"#)["ok"] as? Bool == true)
        #expect(try vm.child.wait(timeout: 20) == 0)
        // Written from inside (as uid nobody), renamed into place by the supervisor.
        #expect(vm.exitRecord?["state"] as? String == "stopped", "\(String(describing: vm.exitRecord))")
        #expect(vm.exitRecord?["exit_status"] as? Int == 0)
        #expect(vm.consoleLog.contains("jailed"), "\(vm.consoleLog)")
        // No temporary file, no socket left.
        #expect(try Self.entries(vm.dir) == ["vm.json", "exit.json", "console.log"])
    }

    /// A guest that touches more memory than its jail allows: the kernel kills that VMM
    /// (its cgroup's limit), the supervisor records why, and another VM runs on.
    @Test func vmOverItsMemoryLimitIsKilledAloneAndRecorded() throws {
        let other = try bootPVMM(["--jail"])
        try other.expect("pvos> ")
        let vm = try ControlledVM(["memory_mib": 256], extra: ["--jail", "--jail-memory-mib", "48"])
        let con = try vm.waitForPrompt()
        con.send("touch 200\n")
        let status = try vm.child.wait(timeout: 30)
        #expect(status == 128 + SIGKILL, "stderr: \(vm.child.errorText)")
        #expect(vm.child.errorText.contains("pvmm: the VMM was killed: out of memory: the jail's memory limit of 48 MiB (cgroup)"),
                "stderr: \(vm.child.errorText)")
        #expect(vm.exitRecord?["state"] as? String == "crashed")
        #expect(vm.exitRecord?["signal_name"] as? String == "SIGKILL")
        let reason = vm.exitRecord?["reason"] as? String ?? ""
        #expect(reason.hasPrefix("out of memory"), "\(String(describing: vm.exitRecord))")
        #expect(try Self.entries(vm.dir) == ["vm.json", "exit.json"])
        // Without the limit the same command works: the guest is fine, its jail was not.
        #expect(try other.command("touch 100").contains("touched 100 MiB"))
        other.send("poweroff\n")
        #expect(try other.wait() == 0)
    }

    @Test func forbiddenCallKillsTheJailedVMMWithSIGSYS() throws {
        // The first process of a pid namespace ignores a signal it raises itself: the
        // reporter must still end it by SIGSYS (Sources/CSeccomp).
        let vm = try ControlledVM(extra: ["--jail", "--seccomp-test-violation", "vcpu:socket"])
        #expect(try vm.child.wait(timeout: 20) == 128 + SIGSYS, "stderr: \(vm.child.errorText)")
        #expect(vm.child.errorText.contains("pvmm: seccomp: thread vcpu0 made forbidden system call socket (41)"), "\(vm.child.errorText)")
        #expect(vm.exitRecord?["reason"] as? String == "seccomp", "\(String(describing: vm.exitRecord))")
        #expect(vm.exitRecord?["signal_name"] as? String == "SIGSYS")
    }

    @Test func terminationSignalsReachTheJailedVMM() throws {
        // --no-stdio: SIGTERM is a stop (exit.json written by the VMM, status 0).
        let daemonStyle = try ControlledVM(extra: ["--jail"])
        _ = try daemonStyle.waitForPrompt()
        kill(daemonStyle.child.pid, SIGTERM)
        #expect(try daemonStyle.child.wait(timeout: 20) == 0)
        #expect(daemonStyle.exitRecord?["state"] as? String == "stopped")
        // On stdio, not caught: the supervisor kills the VMM and dies of the same signal.
        let vm = try bootPVMM(["--jail"])
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        kill(vm.pid, SIGTERM)
        #expect(try vm.wait(timeout: 20) == 128 + SIGTERM)
        #expect(kill(pid, 0) != 0, "the VMM outlived its supervisor")
        // SIGKILL of the supervisor alone: the VMM dies with it (its parent-death signal,
        // set again after it changed uid, which clears it).
        let orphan = try ControlledVM(extra: ["--jail"])
        _ = try orphan.waitForPrompt()
        let orphanVMM = try Self.vmm(of: orphan.child.pid)
        let orphanGroups = try ["memory", "pids"].compactMap { try Self.cgroupDirectory(orphanVMM, $0) }
        #expect(orphanGroups.count == 2)
        kill(orphan.child.pid, SIGKILL)
        _ = try orphan.child.wait(timeout: 10)
        var gone = false
        for _ in 0..<250 where !gone {
            gone = kill(orphanVMM, 0) != 0 || Self.read("/proc/\(orphanVMM)/stat").contains(") Z ")
            if !gone { usleep(20_000) }
        }
        #expect(gone, "the VMM outlived its supervisor's SIGKILL")
        // Its cgroups stay (nobody is left to remove them) until the next jail starts and
        // sweeps the empty ones of supervisors that are gone.
        for g in orphanGroups { #expect(FileManager.default.fileExists(atPath: g), "\(g)") }
        let next = try bootPVMM(["--jail"])
        try next.expect("pvos> ")
        for g in orphanGroups { #expect(!FileManager.default.fileExists(atPath: g), "\(g) left behind") }
        next.send("poweroff\n")
        #expect(try next.wait() == 0)
    }

    @Test func jailedVMOnATapAnswersPings() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(["--jail", "--net", "tap=tap0"])
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        // The tap was opened in the test's namespace; the VMM itself is in an empty one.
        #expect(try Self.namespace(pid, "net") != Self.namespace(vm.pid, "net"))
        #expect(!(try Self.entries("/proc/\(pid)/root/dev")).contains("net"))
        let ping = try ns.exec(["ping", "-c", "20", "-i", "0.05", "-W", "2", "-w", "20", NetNamespace.guest], timeout: 30)
        #expect(ping.text.contains("20 packets transmitted, 20 received, 0% packet loss"), "\(ping.text)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
    }

    /// passt is started before the jail (in the host's net namespace, as the first thing in
    /// the VMM's pid namespace, so it ends with the VMM), and the guest gets DHCP through it.
    @Test func jailedVMGetsDHCPThroughPasst() throws {
        let ns = try NetNamespace()
        for cmd in [["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"], ["ip", "addr", "add", "10.78.0.1/24", "dev", "v0"],
                    ["ip", "link", "set", "v0", "up"], ["ip", "link", "set", "v1", "up"], ["ip", "route", "add", "default", "via", "10.78.0.254"]] {
            try ns.exec(cmd)
        }
        let vm = try ns.bootPVMM(["--jail", "--net", "passt"], cmdline: "ip=dhcp")
        try vm.expect("net0: dhcp 10.78.0.1/24 gateway 10.78.0.254", timeout: 20)
        try vm.expect("pvos> ")
        let pid = try Self.vmm(of: vm.pid)
        let children = Self.read("/proc/\(pid)/task/\(pid)/children").split(separator: " ").compactMap { pid_t($0) }
        let passt = children.filter { Self.read("/proc/\($0)/comm").hasPrefix("passt") }  // passt.avx2 too
        #expect(passt.count == 1, "the VMM's children: \(children)")
        for p in passt {
            #expect(try Self.namespace(p, "net") == Self.namespace(vm.pid, "net"), "passt is not in the host's net namespace")
            #expect(try Self.namespace(p, "pid") == Self.namespace(pid, "pid"), "passt is not in the VMM's pid namespace")
        }
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        for p in passt { #expect(kill(p, 0) != 0, "passt outlived the VMM") }
    }

    /// A jailed VM's snapshot: a directory path is out of its reach (refused, naming the
    /// path); two files made by the client and passed with the request are written, and
    /// the snapshot restores.
    @Test func jailedVMSnapshotsIntoFilesItIsGiven() throws {
        let dir = try SnapshotTests.scratch("jailed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vm = try ControlledVM(extra: ["--jail"])
        let con = try vm.waitForPrompt()
        #expect(try con.command("echo before-the-snapshot").contains("before-the-snapshot"))
        let refused = try vm.request(#"{"op":"snapshot","path":"\#(dir)/by-path"}"#, timeout: 30)
        #expect(refused["ok"] as? Bool == false, "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/by-path"))
        let snap = dir + "/snap"
        try FileManager.default.createDirectory(atPath: snap, withIntermediateDirectories: true)
        let files = ["memory", "state"].map { open("\(snap)/.\($0).tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        defer { files.forEach { close($0) } }
        let r = try vm.connect().request(#"{"op":"snapshot","path":"\#(snap)"}"#, passing: files, timeout: 30)
        #expect(r["ok"] as? Bool == true, "\(r)")
        #expect((r["memory_bytes"] as? Int ?? 0) > 0, "\(r)")
        for name in ["memory", "state"] { #expect(rename("\(snap)/.\(name).tmp", "\(snap)/\(name)") == 0) }
        // The VM runs on; a request that takes no files ignores any it is given.
        #expect(try con.command("echo after-the-snapshot").contains("after-the-snapshot"))
        #expect(try vm.connect().request(#"{"op":"status"}"#, passing: [files[0]])["state"] as? String == "running")
        try SnapshotTests.end(vm)
        let clone = try ControlledVM(restoring: snap, extra: ["--jail"])
        let c = try clone.attach(replay: false)
        #expect(try c.command("echo restored").contains("restored\r\n"))
        try SnapshotTests.end(clone)
    }

    /// `--restore` with `--jail` (docs/snapshot.md): the snapshot's files are opened before.
    @Test func snapshotRestoresIntoTheJail() throws {
        let (dir, snap) = try SnapshotTests.bootedSnapshot("jail")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clone = try ControlledVM(restoring: snap, extra: ["--jail"])
        let c = try clone.attach(replay: false)
        #expect(try c.command("echo restored-in-jail").contains("restored-in-jail\r\n"))
        let pid = try Self.vmm(of: clone.child.pid)
        #expect(try Self.field(pid, "Uid").hasPrefix("65534\t"))
        #expect(try Self.entries("/proc/\(pid)/root") == ["kernel", "dev"])
        // A reboot boots the kernel read at restore (no file opened in the jail).
        let mark = c.stream.count
        #expect(try clone.request(#"{"op":"reboot"}"#, timeout: 20)["ok"] as? Bool == true)
        try c.expect("pvos> ", after: mark, timeout: 20)
        #expect(try c.command("echo rebooted").contains("rebooted\r\n"))
        _ = try? clone.request(#"{"op":"kill"}"#)
        #expect(try clone.child.wait(timeout: 20) == 0)
        #expect(clone.exitRecord?["state"] as? String == "stopped")
    }
}
