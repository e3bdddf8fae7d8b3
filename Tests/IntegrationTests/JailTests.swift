import Foundation
import Testing

/// `pvmm run --jail` on real KVM (Sources/Sandbox/Jail.swift, docs/security.md): the VMM
/// runs as an unprivileged uid in its own mount namespace whose root holds only the
/// kernel, the disks and /dev/kvm, still filtered by seccomp, and the guest works.
@Suite(.serialized) struct JailTests {
    func field(_ pid: pid_t, _ name: String) throws -> String {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return line.split(separator: "\t").dropFirst().first.map(String.init) ?? ""
    }

    func entries(_ path: String) throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: path))
    }

    @Test func jailedVMMHasOnlyItsFilesAndNoRoot() throws {
        let disk = try Paths.temporaryFile("jail.img", [UInt8](repeating: 0x33, count: 1 << 20))
        let vm = try bootPVMM(["--jail", "--disk", disk + ",readonly"])
        try vm.expect("pvos> ")
        let pid = vm.pid
        #expect(try field(pid, "Uid") == "65534", "the VMM still runs as root")
        #expect(try field(pid, "Gid") == "65534")
        #expect(try field(pid, "NoNewPrivs") == "1")
        #expect(try field(pid, "Seccomp") == "2")
        // Its root: the kernel, the disk, /dev with only kvm; no host path reachable.
        #expect(try entries("/proc/\(pid)/root") == ["kernel", "disk0", "dev"])
        #expect(try entries("/proc/\(pid)/root/dev") == ["kvm"])
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)/root/etc/passwd"))
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)/root" + disk))
        // The read-only disk is a read-only mount; the root is read-only too.
        let mounts = try String(contentsOfFile: "/proc/\(pid)/mounts", encoding: .utf8).split(separator: "\n")
        #expect(mounts.contains { $0.contains(" /disk0 ") && $0.contains(" ro,") }, "mounts: \(mounts)")
        #expect(mounts.contains { $0.hasPrefix("pvmm-jail / tmpfs ro,") }, "mounts: \(mounts)")
        // The guest reads its disk through the jail.
        #expect(try vm.command("blk").contains("blk0: 2048 sectors (1 MiB) ro"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func uidAndGidAreThoseGiven() throws {
        let vm = try bootPVMM(["--jail", "--uid", "4321", "--gid", "4322"])
        try vm.expect("pvos> ")
        #expect(try field(vm.pid, "Uid") == "4321")
        #expect(try field(vm.pid, "Gid") == "4322")
        // Without --jail the VMM keeps its caller's uid (the baseline the test compares to).
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        let free = try bootPVMM()
        try free.expect("pvos> ")
        #expect(try field(free.pid, "Uid") == String(getuid()))
        free.send("poweroff\n")
        #expect(try free.wait() == 0)
    }

    @Test func uidWithoutJailIsAUsageError() throws {
        let (status, stderr) = try runPVMMToEnd(["--uid", "5"])
        #expect(status == 2)
        #expect(stderr.contains("--uid: only with --jail"), "stderr: \(stderr)")
    }
}
