import Foundation
import Testing

/// `pvmm run --config FILE`: the same JSON definition the daemon's API takes.
@Suite(.serialized) struct ConfigFileTests {
    func run(_ args: [String]) throws -> (Int32, String) { try runPVMMToEnd(args) }

    @Test func bootsFromAConfigFile() throws {
        let disk = try Paths.temporaryFile("config-disk.img", [UInt8](repeating: 0x5A, count: 1 << 20))
        let json = #"{"kernel": "\#(Paths.guest)", "cmdline": "from=config", "memory_mib": 96, "cpus": 2, "disks": [{"path": "\#(disk)", "readonly": true, "id": "cfgdisk"}]}"#
        let path = try Paths.temporaryFile("vm.json", Array(json.utf8))
        let vm = try Child([Paths.pvmm, "run", "--config", path])
        try vm.expect("pvos> ")
        let info = try vm.command("info")
        #expect(info.contains("cmdline: from=config"))
        #expect(info.contains("cpus: 2"))
        #expect(info.contains("memory: 95 MiB"), "\(info)")
        #expect(try vm.command("blk").contains("cfgdisk"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func errorsNameTheFileAndField() throws {
        let bad = try Paths.temporaryFile("bad.json", Array(#"{"kernel": "\#(Paths.guest)", "memroy_mib": 64}"#.utf8))
        var (s, e) = try run(["--config", bad])
        #expect(s == 2 && e.contains(bad) && e.contains("memroy_mib: unknown field"), "\(e)")

        let type = try Paths.temporaryFile("type.json", Array(#"{"kernel": "\#(Paths.guest)", "disks": [{"path": 5}]}"#.utf8))
        (s, e) = try run(["--config", type])
        #expect(s == 2 && e.contains("disks[0].path: expected a string"), "\(e)")

        let syntax = try Paths.temporaryFile("syntax.json", Array(#"{"kernel": }"#.utf8))
        (s, e) = try run(["--config", syntax])
        #expect(s == 2 && e.contains("invalid JSON at byte 11"), "\(e)")

        // Host limits are checked by the VMM; the JSON field name is kept.
        let huge = try Paths.temporaryFile("huge.json", Array(#"{"kernel": "\#(Paths.guest)", "memory_mib": 50000}"#.utf8))
        (s, e) = try run(["--config", huge])
        #expect(s == 2 && e.contains("memory_mib") && e.contains("too large"), "\(e)")

        (s, e) = try run(["--config", "/nonexistent/vm.json"])
        #expect(s == 2 && e.contains("/nonexistent/vm.json") && e.contains("No such file"), "\(e)")
    }

    @Test func configExcludesVMFlags() throws {
        let path = try Paths.temporaryFile("ok.json", Array(#"{"kernel": "\#(Paths.guest)"}"#.utf8))
        let (s, e) = try run(["--config", path, "--memory", "256"])
        #expect(s == 2 && e.contains("--memory: not allowed with --config"), "\(e)")
    }
}
