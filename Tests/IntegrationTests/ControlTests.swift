import Foundation
import Testing

/// The control socket of a real pvmm-vmm on real KVM, driven the way the daemon drives
/// it (docs/control.md). Every wait has a deadline; `Child` kills the VMM if a test fails.
@Suite(.serialized) struct ControlTests {
    @Test func statusPauseResumeStop() throws {
        let vm = try ControlledVM()
        let con = try vm.waitForPrompt()
        let st = try vm.request(#"{"op":"status"}"#)
        #expect(st["ok"] as? Bool == true && st["state"] as? String == "running")
        #expect(st["pid"] as? Int == Int(vm.child.pid) && st["cpus"] as? Int == 1 && st["memory_mib"] as? Int == 128)
        #expect((st["uptime_ns"] as? Int ?? 0) > 0 && (st["started_ns"] as? Int ?? 0) > 1_600_000_000_000_000_000)

        #expect(try vm.request(#"{"op":"pause"}"#)["state"] as? String == "paused")
        #expect(try vm.request(#"{"op":"status"}"#)["state"] as? String == "paused")
        let conflict = try vm.request(#"{"op":"pause"}"#)
        #expect((conflict["error"] as? [String: Any])?["kind"] as? String == "conflict")
        // A paused guest runs nothing: its `uptime` answer only comes after resume.
        let mark = con.stream.count
        con.send("uptime\n")
        #expect(throws: HarnessError.self) { try con.expect("uptime: ", after: mark, timeout: 1) }
        #expect(try vm.request(#"{"op":"resume"}"#)["state"] as? String == "running")
        try con.expect("pvos> ", after: try con.expect("uptime: ", after: mark).utf8.count + mark)

        let stop = try vm.request(#"{"op":"stop","timeout_s":10}"#)
        #expect(stop["ok"] as? Bool == true && stop["state"] as? String == "stopping")
        #expect(try vm.child.wait(timeout: 10) == 0)
        let exit = try #require(vm.exitRecord)
        #expect(exit["state"] as? String == "stopped" && exit["exit_status"] as? Int == 0, "\(exit)")
        #expect(exit["reason"] == nil, "the guest powered off itself: \(exit)")
        #expect(vm.consoleLog.contains("pvos: power button pressed, powering off"))
        #expect(!FileManager.default.fileExists(atPath: vm.socket), "the socket is removed at exit")
    }

    @Test func killEndsAtOnce() throws {
        let vm = try ControlledVM()
        _ = try vm.waitForPrompt()
        let events = try vm.connect()
        #expect(try events.request(#"{"op":"events"}"#)["ok"] as? Bool == true)
        #expect(try vm.request(#"{"op":"kill"}"#)["ok"] as? Bool == true)
        #expect(try vm.child.wait(timeout: 10) == 0)
        #expect(vm.exitRecord?["reason"] as? String == "killed", "\(vm.exitRecord ?? [:])")
        // The events stream saw the VM end, then closed.
        let lines = String(decoding: try events.readToEnd(), as: UTF8.self).split(separator: "\n")
        let states = lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        #expect(states.map { $0["state"] as? String } == ["stopping", "stopped"], "\(lines)")
        #expect((states.last?["ts_ns"] as? Int ?? 0) > 0 && states.last?["reason"] as? String == "killed")
    }

    @Test func rebootKeepsHistoryAndTheShellAnswersAgain() throws {
        let vm = try ControlledVM(["cpus": 2])
        let con = try vm.waitForPrompt()
        #expect(try con.command("echo first-boot").contains("first-boot"))
        let r = try vm.request(#"{"op":"reboot"}"#)
        #expect(r["ok"] as? Bool == true && r["state"] as? String == "running", "\(r)")
        let mark = con.stream.count
        try con.expect("pvos 0.1", after: mark)
        try con.expect("pvos> ", after: mark)
        #expect(try con.command("echo second-boot").contains("second-boot"))
        #expect(try con.command("cpus").contains("cpu 1: apic 1"), "both vCPUs came back")
        // The guest's own reset reboots too (--on-reset restart), in the same process.
        let mark2 = con.stream.count
        con.send("reboot\n")
        try con.expect("pvos 0.1", after: mark2)
        try con.expect("pvos> ", after: mark2)
        #expect(try con.command("echo third-boot").contains("third-boot"))
        let logs = try vm.connect()
        _ = try logs.request(#"{"op":"logs"}"#)
        let history = String(decoding: try logs.readToEnd(), as: UTF8.self)
        #expect(history.contains("first-boot") && history.contains("second-boot") && history.contains("third-boot"))
        #expect(history.components(separatedBy: "pvos 0.1 (").count - 1 == 3, "\(history)")
        con.send("poweroff\n")
        #expect(try vm.child.wait(timeout: 10) == 0)
        #expect(vm.exitRecord?["exit_status"] as? Int == 0)
    }

    @Test func statsCountExitsAndDevices() throws {
        let vm = try ControlledVM()
        let con = try vm.waitForPrompt()
        _ = try con.command("info")
        let s = try vm.request(#"{"op":"stats"}"#)
        let exits = try #require(s["exits"] as? [String: Int])
        #expect((exits["pio"] ?? 0) > 0 && (exits["mmio"] ?? 0) > 0)
        let devices = try #require(s["devices"] as? [[String: Any]])
        #expect(devices.map { $0["name"] as? String } == ["con0"])
        #expect((devices[0]["requests"] as? Int ?? 0) > 0 && devices[0]["errors"] as? Int == 0)
        let console = try #require(s["console"] as? [String: Int])
        #expect((console["bytes"] ?? 0) > 100 && console["dropped"] == 0)
        #expect(try vm.request(#"{"op":"kill"}"#)["ok"] as? Bool == true)
        _ = try vm.child.wait()
    }

    @Test func badRequestsAreTypedErrors() throws {
        let vm = try ControlledVM()
        _ = try vm.waitForPrompt()
        func error(_ req: String) throws -> [String: Any] {
            let r = try vm.request(req)
            #expect(r["ok"] as? Bool == false, "\(req): \(r)")
            return r["error"] as? [String: Any] ?? [:]
        }
        #expect(try error("not json")["kind"] as? String == "invalid")
        let unknown = try error(#"{"op":"explode"}"#)
        #expect(unknown["kind"] as? String == "invalid" && unknown["field"] as? String == "op")
        #expect(try error(#"{"op":"stop","timeout_s":"soon"}"#)["field"] as? String == "timeout_s")
        #expect(try error(#"{"op":"resume"}"#)["kind"] as? String == "conflict")
        // An endless line without a newline is refused, not buffered forever.
        let c = try vm.connect()
        c.send(String(repeating: "x", count: 10_000))
        let long = try c.request("")
        #expect((long["error"] as? [String: Any])?["kind"] as? String == "invalid")
        // None of that disturbed the VM.
        #expect(try vm.request(#"{"op":"status"}"#)["state"] as? String == "running")
        #expect(try vm.request(#"{"op":"kill"}"#)["ok"] as? Bool == true)
        _ = try vm.child.wait()
    }

    @Test func stopTimesOutWhenTheGuestIgnoresTheButton() throws {
        let vm = try ControlledVM()
        let con = try vm.waitForPrompt()
        // A command that does not return to the prompt for a long time: the guest does
        // not look at the button meanwhile.
        con.send("flood 2000000000\n")
        try con.expect("00000100")
        #expect(try vm.request(#"{"op":"stop","timeout_s":1}"#)["state"] as? String == "stopping")
        #expect(try vm.child.wait(timeout: 10) == 0)
        #expect((vm.exitRecord?["reason"] as? String ?? "").hasPrefix("stop timeout"), "\(vm.exitRecord ?? [:])")
    }

    @Test func guestPanicIsRecordedAsCrashedWithItsVector() throws {
        let vm = try ControlledVM()
        let con = try vm.waitForPrompt()
        con.send("panic\n")
        #expect(try vm.child.wait(timeout: 10) == 1)
        let exit = try #require(vm.exitRecord)
        #expect(exit["state"] as? String == "crashed" && exit["vector"] as? Int == 14, "\(exit)")
        let rip = try #require(exit["rip"] as? String)
        #expect(rip.hasPrefix("0x") && UInt64(rip.dropFirst(2), radix: 16).map { $0 >= 0x100000 } == true, "\(rip)")
        #expect(vm.consoleLog.contains("EXCEPTION vector=14"))
        #expect(vm.child.errorText.contains("guest panic"))
    }
}

/// The console ring and its clients (docs/control.md, `console` and `logs`).
@Suite(.serialized) struct ConsoleRingIntegrationTests {
    static let mib = 1 << 20
    static let ring = 64 << 10

    @Test func megabyteWithNobodyReadingThenReplayAndTwoClients() throws {
        let vm = try ControlledVM()
        do {
            // This client starts the flood and then never reads: it must not slow the
            // guest, and it stays attached (its backlog is bounded by the ring).
            let idle = try vm.waitForPrompt()
            idle.send("flood \(Self.mib)\n")
            let deadline = Date().addingTimeInterval(30)
            var stats: [String: Int] = [:]
            repeat {
                usleep(50_000)
                stats = try vm.request(#"{"op":"stats"}"#)["console"] as? [String: Int] ?? [:]
            } while (stats["bytes"] ?? 0) < Self.mib && Date() < deadline
            #expect((stats["bytes"] ?? 0) >= Self.mib, "\(stats)")
            _ = idle
        }
        // Attaching afterwards replays exactly the ring: the last 64 KiB, with the count
        // of what it no longer holds.
        let late = try vm.connect()
        let r = try late.request(#"{"op":"console","replay":true}"#)
        try late.expect("flood done\r\npvos> ")
        let replayed = try #require(r["replayed"] as? Int), overwritten = try #require(r["overwritten"] as? Int)
        #expect(replayed == Self.ring, "\(r)")
        #expect(overwritten + replayed >= Self.mib, "\(r)")
        let logs = try vm.connect()
        let lr = try logs.request(#"{"op":"logs"}"#)
        let held = try logs.readToEnd()
        #expect(held.count == Self.ring && lr["replayed"] as? Int == Self.ring)
        let text = String(decoding: held, as: UTF8.self)
        #expect(text.hasSuffix("flood done\r\npvos> "))
        #expect(text.contains("00016383......"), "the newest flood line is held")
        #expect(!text.contains("00000000......"), "the oldest is overwritten")

        // Two clients see the same bytes; input from either reaches the shell.
        let a = try vm.attach(replay: false), b = try vm.attach(replay: false)
        let fromA = try a.command("echo from-a")
        #expect(fromA.contains("from-a"))
        try b.expect("from-a\r\npvos> ")
        b.send("echo from-b\n")
        try a.expect("from-b\r\npvos> ")
        try b.expect("from-b\r\npvos> ")
        #expect(a.text == b.text, "both clients got the same stream")

        // Detaching leaves the VM running.
        withExtendedLifetime((a, b, late, logs)) {}
        usleep(100_000)
        #expect(try vm.request(#"{"op":"status"}"#)["state"] as? String == "running")
        let c = try vm.attach(replay: false)
        #expect(try c.command("echo still-here").contains("still-here"))
        c.send("poweroff\n")
        #expect(try vm.child.wait(timeout: 10) == 0)
        #expect(vm.consoleLog.utf8.count == Self.ring)
    }

    @Test func pvmmRunStillPrintsEverythingOnStdout() throws {
        let vm = try bootPVMM()
        try vm.expect("pvos> ")
        _ = try vm.command("flood 200000", timeout: 30)
        #expect(vm.text.contains("00003124......") && vm.text.contains("flood done"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }
}

@Suite struct ControlSignalTests {
    @Test func sigtermStopsAndRecords() throws {
        let vm = try ControlledVM()
        _ = try vm.waitForPrompt()
        kill(vm.child.pid, SIGTERM)
        #expect(try vm.child.wait(timeout: 10) == 0)
        #expect(vm.exitRecord?["reason"] as? String == "stopped", "\(vm.exitRecord ?? [:])")
        #expect(vm.consoleLog.contains("pvos> "))
    }
}
