import Foundation
import Testing

/// `pvmm run` flags as a new user types them: sizes with suffixes, negative numbers.
@Suite struct FlagTests {
    func run(_ args: [String]) throws -> (Int32, String) {
        let c = try Child([Paths.pvmm, "run", "--kernel", Paths.guest] + args)
        c.closeInput()
        let status = try c.wait()
        return (status, c.errorText)
    }

    @Test func negativeNumbersAreOutOfRangeNotMissing() throws {
        for args in [["--memory", "-5"], ["--memory=-5"]] {
            let (s, e) = try run(args)
            #expect(s == 2 && e == "pvmm: --memory: -5 MiB is too small: a VM needs at least 8 MiB\n", "\(args): \(e)")
        }
        for args in [["--cpus", "-1"], ["--cpus=-1"]] {
            let (s, e) = try run(args)
            #expect(s == 2 && e == "pvmm: --cpus: -1 is out of range: a VM needs at least 1 vCPU\n", "\(args): \(e)")
        }
    }

    @Test func badMemorySizesNameTheFlag() throws {
        let (s, e) = try run(["--memory", "12Q"])
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
