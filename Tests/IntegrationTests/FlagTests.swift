import Foundation
import Testing

/// `pvmm run --kernel <pvos> ARGS` to its end: status and stderr.
private func runGuest(_ args: [String]) throws -> (Int32, String) { try runPVMMToEnd(["--kernel", Paths.guest] + args) }

/// `pvmm run` flags as a new user types them: sizes with suffixes, negative numbers.
@Suite struct FlagTests {
    @Test func negativeNumbersAreOutOfRangeNotMissing() throws {
        for args in [["--memory", "-5"], ["--memory=-5"]] {
            let (s, e) = try runGuest(args)
            #expect(s == 2 && e == "pvmm: --memory: -5 MiB is too small: a VM needs at least 8 MiB\n", "\(args): \(e)")
        }
        for args in [["--cpus", "-1"], ["--cpus=-1"]] {
            let (s, e) = try runGuest(args)
            #expect(s == 2 && e == "pvmm: --cpus: -1 is out of range: a VM needs at least 1 vCPU\n", "\(args): \(e)")
        }
    }

    /// `pvmm run` takes plain flags without ArgumentParser (RunFlags.swift); the `=` form,
    /// a repeated flag (ArgumentParser's rule: the last wins) and a missing value must
    /// come out as ArgumentParser says, whichever path parsed them.
    @Test func flagFormsBehaveTheSameOnTheFastPath() throws {
        for args in [["--memory=96", "--cpus=2"], ["--memory", "64", "--memory", "96", "--cpus", "2"]] {
            let vm = try bootPVMM(args)
            try vm.expect("pvos> ")
            let info = try vm.command("info")
            #expect(info.contains("memory: 95 MiB\r\n") && info.contains("cpus: 2\r\n"), "\(args): \(info)")
            vm.send("poweroff\n")
            #expect(try vm.wait() == 0)
        }
        let (s, e) = try runGuest(["--cpus"])
        #expect(s == 2 && e.contains("Missing value for '--cpus"), "\(e)")
    }

    @Test func badMemorySizesNameTheFlag() throws {
        let (s, e) = try runGuest(["--memory", "12Q"])
        #expect(s == 2 && e.hasPrefix("pvmm: --memory: '12Q' has an unknown unit"), "\(e)")
    }

    @Test func memorySuffixesGiveThatMuchRAM() throws {
        // pvmm reserves the first MiB, so the guest reports one MiB less.
        for (arg, mib) in [("256M", 255), ("1G", 1023), ("192", 191)] {
            let vm = try bootPVMM(["--memory", arg])
            try vm.expect("pvos> ")
            let info = try vm.command("info")
            #expect(info.contains("memory: \(mib) MiB\r\n"), "\(arg): \(info)")
            vm.send("poweroff\n")
            #expect(try vm.wait() == 0)
        }
    }
}

/// Disk images as users name and make them: the same file twice, empty files, odd sizes.
@Suite struct DiskFlagTests {
    @Test func theSameFileUnderTwoNamesIsGivenTwice() throws {
        let disk = try DiskImage("twice.img", mib: 1)
        let dir = (disk.path as NSString).deletingLastPathComponent
        let link = dir + "/twice-link.img"
        unlink(link)
        #expect(symlink(disk.path, link) == 0)
        defer { unlink(link) }
        for second in [dir + "/./twice.img", link] {
            let (s, e) = try runGuest(["--disk", disk.path, "--disk", second])
            #expect(s == 2 && e == "pvmm: --disk: \(second) is the same file as disk 0 (\(disk.path)): a disk is given twice\n", "\(e)")
        }
        // Read-only twice is the same mistake, even though shared locks would allow it.
        let (s, e) = try runGuest(["--disk", disk.path + ",readonly", "--disk", link + ",readonly"])
        #expect(s == 2 && e.contains("a disk is given twice"), "\(e)")
    }

    @Test func anEmptyDiskIsRefused() throws {
        let path = try Paths.temporaryFile("empty.img", [])
        defer { unlink(path) }
        let (s, e) = try runGuest(["--disk", path])
        #expect(s == 2 && e == "pvmm: --disk: disk \(path): empty (0 bytes): a disk needs at least one 512-byte sector\n", "\(e)")
    }

    @Test func aPartialSectorIsReportedAndTheRestWorks() throws {
        let path = try Paths.temporaryFile("odd.img", [UInt8](repeating: 0xAB, count: 1000))
        defer { unlink(path) }
        let vm = try bootPVMM(["--disk", path])
        try vm.expect("pvos> ")
        let list = try vm.command("blk")
        #expect(list.contains("blk0: 1 sectors"), "\(list)")
        #expect(try vm.command("blk read 0 0 1").contains("crc32 \(hex8(crc32([UInt8](repeating: 0xAB, count: 512))))"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        #expect(vm.errorText == "pvmm: warning: disk \(path): 1000 bytes is not a multiple of 512: the guest sees 1 sectors, the last 488 bytes are unreachable\n", "\(vm.errorText)")
    }

    @Test func anOverlongCmdlineSaysWhatTheUserMayGive() throws {
        // With the console's entry (34 bytes and a space), `pvmm_msi=0x30` (13 and a space)
        // and `pvmm_poll_us=50` (15 and a space), 4030 bytes are the most.
        var (s, e) = try runGuest(["--poll-us", "50", "--cmdline", String(repeating: "a", count: 4061)])
        #expect(s == 2 && e == "pvmm: --cmdline: 4061 bytes is too long: at most 4030 (the guest takes 4095; pvmm appends 65 bytes of device entries)\n", "\(e)")
        (s, e) = try runGuest(["--cmdline", String(repeating: "a", count: 5000), "--console", "serial"])
        #expect(s == 2 && e == "pvmm: --cmdline: 5000 bytes is too long: at most 4095\n", "\(e)")
    }
}
