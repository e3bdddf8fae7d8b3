import Foundation
import Testing
import VMM

/// The VMM's seccomp filters on real KVM (Sources/Sandbox, docs/security.md): every thread
/// of a running VMM is filtered, and a forbidden call on a vCPU or a device thread kills
/// the VMM with SIGSYS and a line naming the thread and the call. The violations come
/// from pvmm-vmm's test-build-only `--seccomp-test-violation ROLE:CALL`.
@Suite(.serialized) struct SeccompTests {
    static let sigsys: Int32 = 128 + SIGSYS

    /// The filter state of every thread of `pid`: comm -> the Seccomp: field.
    func threadFilters(_ pid: pid_t) throws -> [(String, String)] {
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        return try tasks.map { tid in
            let comm = try String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8)
            let line = status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") } ?? ""
            return (comm, line.split(separator: "\t").last.map(String.init) ?? "")
        }
    }

    func disk() throws -> String { try Paths.temporaryFile("seccomp.img", [UInt8](repeating: 0, count: 1 << 20)) }

    @Test func everyThreadOfARunningVMMIsFiltered() throws {
        let vm = try bootPVMM(["--cpus", "2", "--disk", try disk()])
        try vm.expect("pvos> ")
        // `pvmm run` execs pvmm-vmm: the child's pid is the VMM's.
        let filters = try threadFilters(vm.pid)
        let names = Set(filters.map(\.0))
        #expect(names.isSuperset(of: ["vcpu0", "vcpu1", "pvmm-blk0", "pvmm-con0", "console-in"]), "threads: \(names)")
        for (name, mode) in filters { #expect(mode == "2", "thread \(name) has Seccomp: \(mode)") }
        // Still a working VM under its filters: the disk answers, the console echoes.
        #expect(try vm.command("blk").contains("blk"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        #expect(!vm.errorText.contains("seccomp"), "stderr: \(vm.errorText)")
    }

    @Test func offInstallsNoFilter() throws {
        let vm = try bootPVMM(["--seccomp", "off"])
        try vm.expect("pvos> ")
        for (name, mode) in try threadFilters(vm.pid) { #expect(mode == "0", "thread \(name) has Seccomp: \(mode)") }
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// pvmm-vmm itself with a definition file and the test trigger.
    func violate(_ trigger: String, mode: String = "kill", disk: Bool = false) throws -> Child {
        let config = VMConfig(kernel: Paths.guest, disks: disk ? [DiskConfig(path: try self.disk())] : [])
        let path = try Paths.temporaryFile("seccomp-\(trigger.replacingOccurrences(of: ":", with: "-")).json", config.jsonBytes)
        return try Child([Paths.binDir + "/pvmm-vmm", "--config", path, "--seccomp", mode,
                          "--seccomp-test-violation", trigger])
    }

    @Test(arguments: ["execve", "socket", "openat"])
    func vcpuThreadViolationKillsWithSIGSYS(call: String) throws {
        let vm = try violate("vcpu:\(call)")
        #expect(try vm.wait(timeout: 20) == Self.sigsys, "stderr: \(vm.errorText)")
        #expect(vm.errorText.contains("pvmm: seccomp: thread vcpu0 made forbidden system call \(call) ("), "stderr: \(vm.errorText)")
    }

    @Test(arguments: ["execve", "socket", "openat"])
    func deviceThreadViolationKillsWithSIGSYS(call: String) throws {
        let vm = try violate("device:\(call)", disk: true)
        #expect(try vm.wait(timeout: 20) == Self.sigsys, "stderr: \(vm.errorText)")
        let line = vm.errorText.split(separator: "\n").first { $0.hasPrefix("pvmm: seccomp:") }.map(String.init) ?? ""
        #expect(line.hasPrefix("pvmm: seccomp: thread pvmm-") && line.contains("made forbidden system call \(call) ("),
                "stderr: \(vm.errorText)")
    }

    @Test func logModeLetsTheCallThrough() throws {
        // `log` is for developing new code paths: the kernel logs, the VM runs on.
        let vm = try violate("vcpu:socket", mode: "log")
        try vm.expect("pvos> ", timeout: 20)
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        #expect(!vm.errorText.contains("pvmm: seccomp"), "stderr: \(vm.errorText)")
    }

    @Test func withAControlSocketTheSnapshotWriterIsFilteredToo() throws {
        let vm = try ControlledVM()
        _ = try vm.waitForPrompt()
        let filters = try threadFilters(vm.child.pid)
        #expect(filters.contains { $0.0 == "pvmm-snapshot" }, "threads: \(filters)")
        for (name, mode) in filters { #expect(mode == "2", "thread \(name) has Seccomp: \(mode)") }
        _ = try? vm.request(#"{"op":"kill"}"#)
        #expect(try vm.child.wait(timeout: 10) == 0)
    }

    /// Only the snapshot writer may create a file (O_CREAT|O_EXCL): the console/control
    /// thread, which parses client requests and guest output, dies trying.
    @Test func consoleThreadCannotCreateFiles() throws {
        let created = "/tmp/pvmm-seccomp-creat-"
        let vm = try violate("console:creat")
        #expect(try vm.wait(timeout: 20) == Self.sigsys, "stderr: \(vm.errorText)")
        let line = vm.errorText.split(separator: "\n").first { $0.hasPrefix("pvmm: seccomp:") }.map(String.init) ?? ""
        #expect(line.contains("made forbidden system call openat ("), "stderr: \(vm.errorText)")
        #expect(line.hasPrefix("pvmm: seccomp: thread pvmm-console") || line.hasPrefix("pvmm: seccomp: thread console-in"), "\(line)")
        let left = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix(String(created.dropFirst(5))) }
        #expect(left.isEmpty, "created \(left)")
        for f in left { unlink("/tmp/" + f) }
    }

    @Test func badModeIsAUsageError() throws {
        let (status, stderr) = try runPVMMToEnd(["--seccomp", "maybe"])
        #expect(status == 2)
        #expect(stderr.contains("--seccomp") && stderr.contains("kill, log, off"), "stderr: \(stderr)")
    }
}
