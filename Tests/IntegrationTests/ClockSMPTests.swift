import Devices
import Foundation
import Synchronization
import Testing
import VMM

/// Parses `uptime: 1.234 s`.
func uptimeSeconds(_ text: String) -> Double? {
    guard let r = text.range(of: "uptime: ") else { return nil }
    return Double(text[r.upperBound...].prefix { $0 == "." || $0.isNumber })
}

/// User + system CPU seconds a process has used so far (/proc/PID/stat fields 14, 15).
func cpuSeconds(_ pid: pid_t) throws -> Double {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
    return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

@Suite(.serialized) struct ClockSMPTests {
    @Test func twoCPUsOnlineTickingAndBenchmarking() throws {
        let vm = try bootPVMM(["--cpus", "2"])
        try vm.expect("pvos> ")
        #expect(try vm.command("info").contains("cpus: 2"))
        // Tickless: a timer interrupt comes only for a deadline; `sleep` arms one on each CPU.
        _ = try vm.command("sleep 20")
        let cpus = try vm.command("cpus")
        let lines = cpus.split(whereSeparator: \.isNewline).filter { $0.contains("apic") }
        #expect(lines.count == 2, "\(cpus)")
        for (i, line) in lines.enumerated() {
            #expect(line.contains("apic \(i)"))
            let ticks = line.split(separator: " ").drop { $0 != "ticks" }.dropFirst().first.flatMap { Int($0) } ?? 0
            #expect(ticks > 0, "cpu \(i) took no timer interrupt: \(line)")
        }
        let bench = try vm.command("bench cpu", timeout: 60)
        #expect(bench.contains("cpu 0:") && bench.contains("cpu 1:"), "\(bench)")
        #expect(bench.contains("ns/iter"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func uptimeFollowsTheHostClock() throws {
        let vm = try bootPVMM()
        try vm.expect("pvos> ")
        /// The guest's uptime and the host time halfway through the command's round trip
        /// (when the guest read its clock, within half that trip).
        func sample() throws -> (guest: Double, host: Double, trip: Double) {
            let sent = Date()
            let u = try #require(uptimeSeconds(try vm.command("uptime")))
            let trip = Date().timeIntervalSince(sent)
            return (u, sent.timeIntervalSinceReferenceDate + trip / 2, trip)
        }
        let a = try sample()
        // Tickless: kvmclock alone keeps time, within 1% of the host's over 4 s.
        Thread.sleep(forTimeInterval: 4)
        let b = try sample()
        let guest = b.guest - a.guest, host = b.host - a.host
        #expect(abs(guest - host) <= 0.01 * host + (a.trip + b.trip) / 2,
                "guest advanced \(guest) s, host \(host) s (round trips \(a.trip), \(b.trip) s)")
        #expect(a.trip + b.trip < 0.02 * host, "round trips too slow to judge: \(a.trip), \(b.trip) s")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func idleGuestCostsAlmostNoHostCPU() throws {
        let vm = try bootPVMM(["--cpus", "2"])
        try vm.expect("pvos> ")
        usleep(200_000) // let boot-time work settle
        let c0 = try cpuSeconds(vm.pid), t0 = Date()
        Thread.sleep(forTimeInterval: 3)
        let used = try cpuSeconds(vm.pid) - c0, wall = Date().timeIntervalSince(t0)
        #expect(used / wall < 0.05, "idle VM used \(used) s of CPU in \(wall) s")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    @Test func irqProbeDeliversEveryInterrupt() throws {
        let vm = try bootPVMM(["--irq-probe"])
        try vm.expect("pvos> ")
        let out = try vm.command("bench irq 300", timeout: 30)
        #expect(out.contains("n=300 lost=0"), "\(out)")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        let plain = try bootPVMM()
        try plain.expect("pvos> ")
        #expect(try plain.command("bench irq").contains("no probe"))
        plain.send("poweroff\n")
        #expect(try plain.wait() == 0)
    }

    @Test func qemuBootsBothCPUs() throws {
        let vm = try QEMUTests.boot(["-smp", "2"])
        try vm.expect("pvos> ", timeout: 30)
        let cpus = try vm.command("cpus", timeout: 30)
        #expect(cpus.split(whereSeparator: \.isNewline).filter { $0.contains("apic") }.count == 2, "\(cpus)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }
}

/// Collects console output of an in-process VM.
final class ConsoleRecorder: ByteSink {
    let bytes = Mutex<[UInt8]>([])
    func write(_ b: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: b) } }
    var count: Int { bytes.withLock { $0.count } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }

    func expect(_ needle: String, after from: Int = 0, timeout: Double = 10) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let all = bytes.withLock { Array($0[min(from, $0.count)...]) }
            let s = String(decoding: all, as: UTF8.self)
            if let r = s.range(of: needle) { return String(s[..<r.upperBound]) }
            usleep(5000)
        }
        throw HarnessError(description: "timed out waiting for \(needle.debugDescription); console: \(text.debugDescription)")
    }
}

/// Lifecycle through the VMM API (what the daemon will call), in this process.
@Suite(.serialized) struct LifecycleTests {
    func send(_ vm: VM, _ s: String) {
        var rest = Array(s.utf8)[...]
        while !rest.isEmpty {
            let n = rest.withUnsafeBytes { vm.sendConsoleInput($0) }
            rest = rest.dropFirst(n)
            if n == 0 { usleep(1000) }
        }
    }

    func command(_ vm: VM, _ rec: ConsoleRecorder, _ line: String) throws -> String {
        let mark = rec.count
        send(vm, line + "\n")
        return try rec.expect("pvos> ", after: mark)
    }

    @Test func pauseAndResume() throws {
        let rec = ConsoleRecorder()
        let vm = try VM(config: VMConfig(kernel: Paths.guest, cpus: 2), console: rec)
        try vm.start()
        defer {
            vm.stop()
            _ = vm.wait()
        }
        _ = try rec.expect("pvos> ")
        let u0 = try #require(uptimeSeconds(try command(vm, rec, "uptime")))

        try vm.pause()
        #expect(vm.isPaused)
        let mark = rec.count
        send(vm, "echo while paused\n") // queued, not lost
        Thread.sleep(forTimeInterval: 1)
        #expect(rec.count == mark, "a paused VM produced output")
        try vm.resume()
        #expect(!vm.isPaused)
        _ = try rec.expect("while paused", after: mark)
        _ = try rec.expect("pvos> ", after: mark)

        let u1 = try #require(uptimeSeconds(try command(vm, rec, "uptime")))
        #expect(u1 > u0, "uptime went backwards: \(u0) -> \(u1)")
        // The guest clock follows the host's: the paused second is not lost or doubled.
        #expect(u1 - u0 >= 1.0 && u1 - u0 < 3.0, "\(u0) -> \(u1)")
        #expect(try command(vm, rec, "echo alive").contains("alive"))
    }

    @Test func stopEndsARunningVM() throws {
        let vm = try VM(config: VMConfig(kernel: Paths.guest), console: ConsoleRecorder())
        try vm.start()
        usleep(50_000)
        vm.stop()
        #expect(vm.wait() == .stopped)
    }
}
