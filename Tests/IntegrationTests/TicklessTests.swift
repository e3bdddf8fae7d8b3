import Foundation
import Testing

/// Per-CPU timer interrupt counts from `cpus` (`cpu N: apic A ticks T irqs I online`).
func tickCounts(_ text: String) -> [Int] {
    text.split(whereSeparator: \.isNewline).filter { $0.contains("apic") }.map { line in
        line.split(separator: " ").drop { $0 != "ticks" }.dropFirst().first.flatMap { Int($0) } ?? -1
    }
}

/// `sleep MS` lines: each online CPU's measured sleep in ms.
func sleptMilliseconds(_ text: String) -> [Double] {
    text.split(whereSeparator: \.isNewline).compactMap { line in
        guard let r = line.range(of: "slept ") else { return nil }
        return Double(line[r.upperBound...].prefix { $0 == "." || $0.isNumber })
    }
}

/// The tickless pvos (guests/pvos/Timer.swift): no timer interrupt while nothing is due,
/// one-shot deadlines on every CPU (uptime within 1% of the host: ClockSMPTests).
@Suite(.serialized) struct TicklessTests {
    /// Idle at the prompt: fewer than 5 timer interrupts a second on every CPU, and
    /// `sleep` still wakes every CPU on time, in TSC-deadline and in count mode.
    func idleAndSleep(_ vm: Child, cpus: Int, mode: String, timeout: Double = 10) throws {
        try vm.expect("pvos> ", timeout: timeout)
        #expect(try vm.command("info", timeout: timeout).contains("tickless \(mode)"))
        let before = tickCounts(try vm.command("cpus", timeout: timeout))
        let t0 = Date()
        Thread.sleep(forTimeInterval: 2)
        let after = tickCounts(try vm.command("cpus", timeout: timeout))
        let wall = Date().timeIntervalSince(t0)
        #expect(before.count == cpus && after.count == cpus, "\(before) \(after)")
        for (b, a) in zip(before, after) {
            #expect(b >= 0 && a >= b && Double(a - b) / wall < 5, "idle timer interrupts: \(before) -> \(after) in \(wall) s")
        }
        let out = try vm.command("sleep 200", timeout: timeout)
        let slept = sleptMilliseconds(out)
        #expect(slept.count == cpus, "\(out)")
        for ms in slept { #expect(ms >= 200 && ms < 260, "\(out)") }
        let woken = tickCounts(try vm.command("cpus", timeout: timeout))
        for (a, w) in zip(after, woken) { #expect(w > a, "a CPU slept without a timer interrupt: \(after) -> \(woken)") }
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: timeout) == 0)
    }

    @Test func tscDeadlineUnderPVMM() throws {
        try idleAndSleep(try bootPVMM(["--cpus", "2"]), cpus: 2, mode: "tsc-deadline")
    }

    @Test func countModeUnderPVMM() throws {
        try idleAndSleep(try bootPVMM(["--cpus", "2", "--cmdline", "notscdeadline"]), cpus: 2, mode: "one-shot")
    }

    @Test func underQEMU() throws {
        try idleAndSleep(try QEMUTests.boot(["-smp", "2"]), cpus: 2, mode: "tsc-deadline", timeout: 30)
    }

    @Test func sleepRejectsBadArguments() throws {
        let vm = try bootPVMM()
        try vm.expect("pvos> ")
        for bad in ["sleep", "sleep 0", "sleep x", "sleep 600001"] {
            #expect(try vm.command(bad).contains("usage: sleep MS"), "\(bad)")
        }
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }
}
