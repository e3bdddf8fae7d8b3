import Foundation
import Testing

/// `pvmm run` on real KVM with the real guest. Each test bounds the VM's life with a
/// deadline and the harness kills the VM's process group if a test fails midway.
@Suite(.serialized) struct PVMMRunTests {
    @Test func bootsNativeAndRunsTheShell() throws {
        let vm = try bootPVMM(["--cmdline", "hello=world"])
        try vm.expect("pvos> ")
        let info = try vm.command("info")
        #expect(info.contains("platform: pvm-native"))
        #expect(info.contains("cmdline: hello=world"))
        #expect(info.contains("cpus: 1"))
        let echo = try vm.command("echo round   trip 123")
        #expect(echo.contains("round trip 123"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func panicReportsPageFaultAndFails() throws {
        let vm = try bootPVMM()
        try vm.expect("pvos> ")
        vm.send("panic\n")
        let status = try vm.wait()
        #expect(status != 0)
        #expect(vm.text.contains("vector=14"))
    }

    @Test func pipedInputThenEOFIsHarmless() throws {
        let vm = try bootPVMM()
        vm.send("echo one\necho two\ninfo\n")
        vm.closeInput()
        try vm.expect("platform: pvm-native")
        #expect(vm.text.contains("one") && vm.text.contains("two"))
        // EOF did not end the VM: it still runs and the shell is at its prompt.
        try vm.expect("pvos> ", after: vm.text.utf8.count - 8)
        #expect(throws: HarnessError.self) { try vm.wait(timeout: 0.5) }
    }

    @Test func defaultKernelIsTheBundledGuest() throws {
        let vm = try bootPVMM(kernel: nil)
        try vm.expect("pvos> ")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func guestStatusBecomesExitStatus() throws {
        let path = try Paths.temporaryFile("sysctl.elf", TinyELF.make(code: TinyELF.sysctl(42)))
        #expect(try bootPVMM(kernel: path).wait() == 42)
        let hello = try Paths.temporaryFile("hello.elf", TinyELF.make(code: TinyELF.hello))
        let vm = try bootPVMM(kernel: hello)
        #expect(try vm.wait() == 0)
        #expect(vm.text == "ok\n")
    }

    @Test func i8042ResetExitsZero() throws {
        let path = try Paths.temporaryFile("reset.elf", TinyELF.make(code: TinyELF.i8042Reset))
        #expect(try bootPVMM(kernel: path).wait() == 0)
    }

    @Test func tripleFaultIsReportedWithRegisters() throws {
        let path = try Paths.temporaryFile("ud2.elf", TinyELF.make(code: TinyELF.ud2))
        let vm = try bootPVMM(kernel: path)
        let status = try vm.wait()
        #expect(status == 1)
        #expect(vm.errorText.contains("triple fault"))
        #expect(vm.errorText.contains("RIP=0000000000100000"))
        #expect(vm.errorText.contains("CR3="))
    }

    @Test func ttyRawModeCtrlAXStopsAndRestoresTerminal() throws {
        var master: Int32 = 0, slave: Int32 = 0
        try #require(openpty(&master, &slave, nil, nil, nil) == 0)
        defer { close(master); close(slave) }
        var before = termios()
        tcgetattr(slave, &before)
        #expect(before.c_lflag & tcflag_t(ICANON) != 0)
        let vm = try Child([Paths.pvmm, "run", "--kernel", Paths.guest], pty: (master, slave))
        try vm.expect("pvos> ")
        var during = termios()
        tcgetattr(slave, &during)
        #expect(during.c_lflag & tcflag_t(ICANON) == 0) // raw while the VM runs
        // Ctrl-C is a byte for the guest in raw mode, not a signal for pvmm.
        vm.send("\u{03}")
        _ = try vm.command("echo still here")
        vm.send("\u{01}x")
        #expect(try vm.wait() == 0)
        var after = termios()
        tcgetattr(slave, &after)
        #expect(after.c_lflag == before.c_lflag)
        #expect(after.c_iflag == before.c_iflag)
        #expect(after.c_oflag == before.c_oflag)
    }

    @Test func ctrlAXStopsAGuestThatNeverReadsInput() throws {
        var master: Int32 = 0, slave: Int32 = 0
        try #require(openpty(&master, &slave, nil, nil, nil) == 0)
        defer { close(master); close(slave) }
        // `jmp .`: the guest never reads its console, so typed bytes pile up in pvmm.
        let path = try Paths.temporaryFile("spin.elf", TinyELF.make(code: [0xEB, 0xFE]))
        let vm = try Child([Paths.pvmm, "run", "--kernel", path, "--console", "serial"], pty: (master, slave))
        usleep(200_000)
        for _ in 0..<12 { vm.send(String(repeating: "y", count: 500) + "\r") }
        usleep(100_000)
        vm.send("\u{01}x")
        #expect(try vm.wait(timeout: 10) == 0)
    }
}

/// Bad input: a clear message naming the flag or file, exit status 2, no VM started.
@Suite struct PVMMUsageErrorTests {
    func run(_ args: [String]) throws -> (Int32, String) { try runPVMMToEnd(args) }

    @Test func missingKernel() throws {
        let (s, e) = try run(["--kernel", "/nonexistent/kernel.elf"])
        #expect(s == 2)
        #expect(e.contains("/nonexistent/kernel.elf") && e.contains("No such file"))
    }

    @Test func unreadableKernelIsADirectory() throws {
        let (s, e) = try run(["--kernel", "/tmp"])
        #expect(s == 2)
        #expect(e.contains("kernel /tmp"))
    }

    @Test func notAnELF() throws {
        let path = try Paths.temporaryFile("text.elf", Array("hello, I am not a kernel\n".utf8))
        let (s, e) = try run(["--kernel", path])
        #expect(s == 2)
        #expect(e.contains(path) && e.contains("ELF"))
    }

    @Test func segmentOutsideGuestRAM() throws {
        let path = try Paths.temporaryFile("high.elf", TinyELF.make(code: TinyELF.ud2, address: 0x4000_0000))
        let (s, e) = try run(["--kernel", path, "--memory", "64"])
        #expect(s == 2)
        #expect(e.contains(path) && e.contains("outside guest RAM"))
    }

    @Test func memoryTooSmallOrTooLarge() throws {
        var (s, e) = try run(["--kernel", Paths.guest, "--memory", "2"])
        #expect(s == 2 && e.contains("--memory") && e.contains("too small"))
        (s, e) = try run(["--kernel", Paths.guest, "--memory", "100000000"])
        #expect(s == 2 && e.contains("--memory") && e.contains("too large"))
        (s, e) = try run(["--kernel", Paths.guest, "--memory", "lots"])
        #expect(s == 2 && e.contains("--memory"))
    }

    @Test func cpuCounts() throws {
        var (s, e) = try run(["--kernel", Paths.guest, "--cpus", "0"])
        #expect(s == 2 && e.contains("--cpus"))
        (s, e) = try run(["--kernel", Paths.guest, "--cpus", "100000"])
        #expect(s == 2 && e.contains("--cpus") && e.contains("1 to"))
        (s, e) = try run(["--kernel", Paths.guest, "--cpus", "-3"])
        #expect(s == 2 && e.contains("--cpus"))
    }

    @Test func unknownFlag() throws {
        let (s, e) = try run(["--frobnicate"])
        #expect(s == 2 && e.contains("--frobnicate"))
    }

    @Test func helpExplainsEveryFlag() throws {
        let c = try Child([Paths.pvmm, "run", "--help"])
        #expect(try c.wait() == 0)
        for flag in ["--kernel", "--cmdline", "--memory", "--cpus", "Ctrl-A x"] { #expect(c.text.contains(flag)) }
    }
}

/// The console escape keys on a terminal (Ctrl-A h, Ctrl-A x) through a pty.
@Suite(.serialized) struct ConsoleEscapeKeyTests {
    @Test func ctrlAHShowsTheKeysAndSendsNothing() throws {
        let pty = try PTY()
        let vm = try pty.pvmm(["--kernel", Paths.guest])
        try vm.expect("pvos> ")
        let mark = vm.stdout.count
        vm.send("\u{01}h")
        let help = try vm.expect("send Ctrl-A to the guest\r\n", after: mark)  // ONLCR: LF -> CR LF
        #expect(help.contains("Ctrl-A, then") && help.contains("x       stop the VM"), "\(help)")
        // The guest got no `h`: the next line runs as typed.
        let out = try vm.command("echo ok")
        #expect(out.contains("\nok\r") && !out.contains("unknown command"), "\(out)")  // CR LF + ONLCR
        vm.send("\u{01}x")
        #expect(try vm.wait() == 0)
    }

    @Test func ctrlAXEndsTheLineAndSaysWhy() throws {
        let pty = try PTY()
        let vm = try pty.pvmm(["--kernel", Paths.guest])
        try vm.expect("pvos> ")
        vm.send("\u{01}x")
        #expect(try vm.wait() == 0)
        // The prompt's line is ended, so the user's shell prompt starts a line of its own.
        #expect(vm.text.hasSuffix("pvos> \r\n"), "\(vm.text.suffix(40).debugDescription)")
        #expect(vm.errorText == "pvmm: stopped by Ctrl-A x\n", "\(vm.errorText.debugDescription)")
    }
}
