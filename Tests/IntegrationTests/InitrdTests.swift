import Foundation
import Testing

/// FNV-1a (64-bit), as pvos's `info` prints it for the initrd.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

/// Bytes no guest could guess: the test checks the guest read exactly these.
func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

/// The `initrd:` line of pvos's `info`: size, address, checksum.
struct InitrdLine {
    let size: UInt64, address: UInt64, checksum: UInt64

    init?(_ info: String) {
        // "initrd: 300001 bytes at 0x07fb6000, fnv1a 0x0123456789abcdef"
        guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("initrd: ") }) else { return nil }
        let w = line.split(separator: " ")
        guard w.count == 7, let s = UInt64(w[1]), let a = UInt64(w[4].dropFirst(2).dropLast(), radix: 16),
              let c = UInt64(w[6].dropFirst(2), radix: 16) else { return nil }
        (size, address, checksum) = (s, a, c)
    }
}

/// `--initrd`: the file lands in guest RAM as PVH module 0 and the guest reads it there.
@Suite(.serialized) struct InitrdTests {
    /// Checks what pvos says about the initrd against the file: every byte, page-aligned,
    /// high in RAM (the last page holds its end), above the kernel.
    static func check(_ info: String, _ bytes: [UInt8], memoryMiB: UInt64 = 128, _ where_: String) {
        guard let l = InitrdLine(info) else { Issue.record("\(where_): no initrd line in \(info)"); return }
        #expect(l.size == UInt64(bytes.count), "\(where_)")
        #expect(l.checksum == fnv1a(bytes), "\(where_): the guest read other bytes")
        #expect(l.address % 4096 == 0 && l.address + l.size <= memoryMiB << 20, "\(where_)")
        #expect(l.address + l.size > (memoryMiB << 20) - 4096, "\(where_): not at the top of RAM")
        #expect(l.address >= 2 << 20, "\(where_): not above the kernel (loaded from 1 MiB)")
    }

    @Test func pvmmEntryGuestReadsEveryByte() throws {
        let bytes = randomBytes(300_001)
        let path = try Paths.temporaryFile("initrd-a.bin", bytes)
        let vm = try bootPVMM(["--initrd", path, "--cpus", "2"])
        try vm.expect("pvos> ")
        let info = try vm.command("info")
        Self.check(info, bytes, "pvmm entry")
        #expect(info.contains("cpus: 2"), "\(info)")
        // A pvmm-aware kernel takes virtio interrupts as MSIs (pvmm_msi= on its command line).
        #expect(info.contains("devices msi") && info.contains("pvmm_msi=0x30"), "\(info)")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// pvos without its PVMM note boots through the PVH entry (32-bit, as Linux does):
    /// the same start info, the same module.
    @Test func pvhEntryGuestReadsEveryByte() throws {
        var elf = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Paths.guest)))
        // The note header {namesz 5, descsz 8, type 1} + "PVMM\0": make its type unknown.
        let header: [UInt8] = [5, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0] + Array("PVMM".utf8) + [0]
        let at = try #require((0...(elf.count - header.count)).first { elf[$0..<($0 + header.count)].elementsEqual(header) })
        elf[at + 8] = 0x7F
        let kernel = try Paths.temporaryFile("pvos-pvh-only.elf", elf)
        let bytes = randomBytes(65_536)
        let path = try Paths.temporaryFile("initrd-b.bin", bytes)
        let disk = try Paths.temporaryFile("initrd-pvh-disk.img", [UInt8](repeating: 0x5A, count: 1 << 20))
        let vm = try bootPVMM(["--initrd", path, "--cpus", "2", "--disk", disk + ",id=pvhdisk"], kernel: kernel)
        try vm.expect("pvos> ", timeout: 60)
        let info = try vm.command("info")
        Self.check(info, bytes, "PVH entry")
        // A standard PVH kernel (Linux) gets standard interrupts: no pvmm_msi=, the virtio
        // devices' GSIs through the IOAPIC it programs (the console's input and the disk
        // answer through them), both CPUs from the MADT.
        #expect(info.contains("devices ioapic") && !info.contains("pvmm_msi"), "\(info)")
        #expect(info.contains("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"), "\(info)")
        #expect(info.contains("cpus: 2"), "\(info)")
        #expect(try vm.command("blk").contains("pvhdisk"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// A reboot copies the initrd again (RAM is zeroed; the file is not reopened).
    @Test func rebootLoadsItAgain() throws {
        let bytes = randomBytes(12_345)
        let path = try Paths.temporaryFile("initrd-c.bin", bytes)
        let vm = try ControlledVM(["initrd": path])
        let con = try vm.waitForPrompt()
        Self.check(try con.command("info"), bytes, "first boot")
        let mark = con.stream.count
        con.send("reboot\n")
        try con.expect("pvos> ", after: mark)
        Self.check(try con.command("info"), bytes, "after reboot")
        con.send("poweroff\n")
        #expect(try vm.child.wait(timeout: 10) == 0)
    }

    @Test func fromAConfigFile() throws {
        let bytes = randomBytes(4096)
        let initrd = try Paths.temporaryFile("initrd-d.bin", bytes)
        let json = #"{"kernel": "\#(Paths.guest)", "initrd": "\#(initrd)"}"#
        let vm = try Child([Paths.pvmm, "run", "--config", try Paths.temporaryFile("initrd-vm.json", Array(json.utf8))])
        try vm.expect("pvos> ")
        Self.check(try vm.command("info"), bytes, "--config")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func withoutOneTheGuestSeesNone() throws {
        let vm = try bootPVMM()
        try vm.expect("pvos> ")
        #expect(!(try vm.command("info")).contains("initrd:"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// Bad input: status 2, one line naming the flag (or the JSON field) and the file.
    @Test func badInitrdsNameTheFlag() throws {
        let dir = FileManager.default.temporaryDirectory.path
        let empty = try Paths.temporaryFile("initrd-empty.bin", [])
        let cases: [([String], String)] = [
            (["--initrd", "/nonexistent/initrd.img"], "pvmm: --initrd: /nonexistent/initrd.img: No such file or directory\n"),
            (["--initrd", dir], "pvmm: --initrd: \(dir): is a directory, not a file\n"),
            (["--initrd", "/dev/null"], "pvmm: --initrd: /dev/null: not a regular file\n"),
            (["--initrd", empty], "pvmm: --initrd: \(empty) is empty\n"),
            (["--initrd", ""], "pvmm: --initrd: empty path\n"),
        ]
        for (args, message) in cases {
            let (s, e) = try runPVMMToEnd(["--kernel", Paths.guest] + args)
            #expect(s == 2 && e == message, "\(args): \(s) \(e)")
        }
        let json = #"{"kernel": "\#(Paths.guest)", "initrd": "/nonexistent/initrd.img"}"#
        let config = try Paths.temporaryFile("initrd-bad.json", Array(json.utf8))
        let (s, e) = try runPVMMToEnd(["--config", config])
        #expect(s == 2 && e == "pvmm: initrd: /nonexistent/initrd.img: No such file or directory\n", "\(e)")
        let (s2, e2) = try runPVMMToEnd(["--config", config, "--initrd", empty])
        #expect(s2 == 2 && e2.contains("--initrd: not allowed with --config"), "\(e2)")
    }

    /// Larger than RAM, or larger than what is left above the kernel: the message says
    /// how much memory it would take.
    @Test func anInitrdThatDoesNotFitIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-initrd-big-\(getpid()).bin").path
        // Sparse: 63 MiB of holes cost no disk.
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        try #require(fd >= 0 && ftruncate(fd, 63 << 20) == 0)
        close(fd)
        defer { unlink(path) }
        let (s, e) = try runPVMMToEnd(["--kernel", Paths.guest, "--initrd", path, "--memory", "64"])
        #expect(s == 2 && e.hasPrefix("pvmm: --initrd: \(path): 66060288 bytes do not fit in guest RAM between the kernel's end 0x"), "\(e)")
        #expect(e.hasSuffix(": the VM needs at least 65 MiB of memory\n"), "\(e)")
        let (s2, e2) = try runPVMMToEnd(["--kernel", Paths.guest, "--initrd", path, "--memory", "32"])
        #expect(s2 == 2 && e2 == "pvmm: --initrd: \(path): 66060288 bytes is larger than guest RAM\n", "\(e2)")
    }

    /// QEMU's PVH loader passes `-initrd` the same way (module 0): pvos reads it there too,
    /// so pvmm's start info and an independent implementation agree.
    @Test func qemuPassesItTheSameWay() throws {
        let bytes = randomBytes(100_003)
        let path = try Paths.temporaryFile("initrd-q.bin", bytes)
        let vm = try QEMUTests.boot(["-initrd", path])
        try vm.expect("pvos> ", timeout: 30)
        let info = try vm.command("info")
        let l = try #require(InitrdLine(info), "\(info)")
        #expect(l.size == UInt64(bytes.count) && l.checksum == fnv1a(bytes), "\(info)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }
}
