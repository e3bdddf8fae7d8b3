import Foundation
import Testing

/// The pvos shell as a user at a terminal meets it: line editing, history, Ctrl-C, long
/// lines, `info` and `blk` argument errors. Keys are the bytes a VT100/xterm sends; the
/// guest sees the same bytes through a pipe as through pvmm's raw terminal.
@Suite(.serialized) struct ShellTests {
    static let esc = "\u{1b}"
    static let left = esc + "[D", right = esc + "[C", up = esc + "[A", down = esc + "[B"

    /// The command's own output: what follows the echoed line, up to the next prompt.
    func output(_ vm: Child, _ line: String) throws -> String {
        let all = try vm.command(line)
        guard let r = all.range(of: "\r\n") else { return all }
        return String(all[r.upperBound...].dropLast("pvos> ".count))
    }

    /// Boots pvos, runs `body` at its prompt, then powers off (status 0).
    func shell(_ extra: [String] = [], _ body: (Child) throws -> Void) throws {
        let vm = try bootPVMM(extra)
        try vm.expect("pvos> ")
        try body(vm)
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func cursorKeysEditTheLine() throws {
        try shell { (vm) throws in
            // Left twice, insert, End, append.
            #expect(try output(vm, "echo abc\(Self.left)\(Self.left)X\(Self.esc)[FY") == "aXbcY\r\n")
            // Home (both forms), insert at the start; Right moves back over a character.
            #expect(try output(vm, "cho 1\(Self.esc)[He\(Self.esc)OH" + String(repeating: Self.right, count: 7) + "2") == "12\r\n")
            // Backspace and Delete (ESC [ 3 ~) in the middle of the line.
            #expect(try output(vm, "echo abcd\(Self.left)\(Self.left)\u{7f}\(Self.esc)[3~") == "ad\r\n")
            // Ctrl-U erases the line, Ctrl-A/Ctrl-E are Home/End.
            #expect(try output(vm, "junk\u{15}cho q\u{01}e\u{05}r") == "qr\r\n")
        }
    }

    @Test func upAndDownWalkTheHistory() throws {
        try shell { (vm) throws in
            #expect(try output(vm, "echo one") == "one\r\n")
            #expect(try output(vm, "echo two") == "two\r\n")
            #expect(try output(vm, Self.up) == "two\r\n")              // the last line again
            #expect(try output(vm, Self.up + Self.up) == "one\r\n")    // a repeat is stored once
            // History is now one, two, one. Up past the oldest stays there; Down comes back
            // to the line being typed.
            #expect(try output(vm, "echo draft" + String(repeating: Self.up, count: 5) + String(repeating: Self.down, count: 3)) == "draft\r\n")
            // A recalled line can be edited before it runs.
            #expect(try output(vm, Self.up + "!") == "draft!\r\n")
        }
    }

    @Test func ctrlCCancelsTheLineAndSaysHowToLeave() throws {
        try shell { (vm) throws in
            let mark = vm.stdout.count
            vm.send("echo nope\u{03}")
            let cancelled = try vm.expect("pvos> ", after: mark)
            #expect(cancelled.contains("echo nope^C\r\n"), "\(cancelled)")
            #expect(!cancelled.contains("\r\nnope\r\n"))         // never ran
            // On an empty line, Ctrl-C also tells how to leave.
            let mark2 = vm.stdout.count
            vm.send("\u{03}")
            let hint = try vm.expect("pvos> ", after: mark2)
            #expect(hint.contains("^C\r\n(poweroff ends the VM; Ctrl-A x stops pvmm)"), "\(hint)")
            #expect(try output(vm, "echo after") == "after\r\n")
        }
    }

    @Test func anOverlongLineIsRefusedWithAMessage() throws {
        try shell { (vm) throws in
            let long = "echo " + String(repeating: "x", count: 295)
            let out = try output(vm, long)
            #expect(out == "line too long (300 bytes; the shell takes at most 256): ignored\r\n", "\(out)")
            // The longest line that fits still runs.
            let fits = "echo " + String(repeating: "y", count: 251)
            #expect(try output(vm, fits) == String(repeating: "y", count: 251) + "\r\n")
        }
    }

    @Test func infoShowsUserOptionsApartFromDevices() throws {
        let disk = try DiskImage("info.img", mib: 1)
        try shell(["--cmdline", "hello=world quiet", "--disk", disk.path]) { (vm) throws in
            let info = try vm.command("info")
            #expect(info.contains("cmdline: hello=world quiet\r\n"), "\(info)")
            #expect(info.contains("devices: virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 pvmm_msi=0x30"), "\(info)")
            #expect(info.contains("option: hello=world\r\n"))
            #expect(!info.contains("option: virtio_mmio"), "\(info)")
        }
    }

    @Test func blkArgumentErrorsNameTheArgument() throws {
        let disk = try DiskImage("args.img", mib: 1)
        try shell(["--disk", disk.path]) { (vm) throws in
            #expect(try output(vm, "blk read x y z") == "blk read: DISK 'x' is not a number\r\n")
            #expect(try output(vm, "blk read 0 y z") == "blk read: LBA 'y' is not a number\r\n")
            #expect(try output(vm, "blk read 0 1 z") == "blk read: COUNT 'z' is not a number\r\n")
            #expect(try output(vm, "blk write 0 1 1 -4") == "blk write: SEED '-4' is not a number\r\n")
            #expect(try output(vm, "blk read 3 0 1") == "blk read: no disk 3 (disks are 0 to 0)\r\n")
            #expect(try output(vm, "blk flush 0 0").hasPrefix("usage: blk flush DISK"))
            #expect(try output(vm, "blk bench 0 read sideways 4096 1 1") == "blk bench: pattern 'sideways' is not seq or rand\r\n")
            #expect(try output(vm, "blk read 0 0 1").hasPrefix("crc32 "))    // and good ones still work
        }
    }
}
