import Testing
#if canImport(Glibc)
import Glibc
#endif
import VMControl
import VMDefinition
@testable import Daemon

@Suite struct DaemonUnitTests {
    @Test func recordsRoundTripThroughTheirJSON() throws {
        var r = VMRecord(state: .paused, createdNs: 1_700_000_000_000_000_000)
        r.pid = 4242
        r.pidStart = 987_654
        r.startedNs = 1_700_000_001_000_000_000
        r.uptimeBaseNs = 5_000
        r.runningSinceMono = 77
        r.lastExit = .object([("state", .string("crashed")), ("reason", .string("killed by signal 9")), ("signal", .int(9))])
        let back = try #require(VMRecord(json: JSONValue(parsing: r.json.encodedBytes)))
        #expect(back.json == r.json)
        #expect(VMRecord(json: .object([("state", .string("dancing")), ("created_ns", .int(1))])) == nil)
        #expect(VMRecord(json: .array([])) == nil)
    }

    @Test func uptimeCountsOnlyRunningTime() {
        var r = VMRecord(state: .running, createdNs: 0)
        r.uptimeBaseNs = 100
        #expect(r.uptimeNs(now: 1_000) == 100)
        r.runningSinceMono = 400
        #expect(r.uptimeNs(now: 1_000) == 700)
        #expect(r.uptimeNs(now: 300) == 100)  // a clock read before the start never goes negative
    }

    @Test func howARunEnded() {
        let exit = JSONValue.object([("state", .string("stopped")), ("exit_status", .int(3))])
        #expect(endRecord(exitJSON: exit, end: .exited(status: 3), logTail: "").0 == .stopped)
        #expect(endRecord(exitJSON: exit, end: .exited(status: 3), logTail: "").1 == exit)
        let killed = endRecord(exitJSON: nil, end: .signaled(signal: 9), logTail: "")
        #expect(killed.0 == .crashed)
        #expect(killed.1["signal"]?.intValue == 9)
        #expect(killed.1["reason"]?.stringValue == "killed by signal 9")
        let failed = endRecord(exitJSON: nil, end: .exited(status: 2), logTail: "pvmm: kernel: not found")
        #expect(failed.0 == .crashed)
        #expect(failed.1["vmm_status"]?.intValue == 2)
        #expect(failed.1["reason"]?.stringValue?.hasSuffix("pvmm: kernel: not found") == true)
        let orphan = endRecord(exitJSON: nil, end: .unknown, logTail: "")
        #expect(orphan.1["reason"]?.stringValue?.contains("not its parent") == true)
        // A damaged exit.json is no exit record.
        #expect(endRecord(exitJSON: .string("x"), end: .exited(status: 0), logTail: "").0 == .crashed)
    }

    @Test func aSeccompKillNamesTheCall() {
        let line = "pvmm: seccomp: thread vcpu0 made forbidden system call ioctl (16) request 0x0000aead; the VMM stops"
        #expect(SeccompReport(line: line) == SeccompReport(thread: "vcpu0", syscall: "ioctl", number: 16))
        for bad in ["", "pvmm: seccomp: thread  made forbidden system call x (1)", "pvmm: seccomp: thread a made forbidden system call x (y)",
                    "pvmm: seccomp: thread a made forbidden system call (3)", "pvmm: other: thread a made forbidden system call x (1)"] {
            #expect(SeccompReport(line: bad) == nil, "\(bad)")
        }
        let end = endRecord(exitJSON: nil, end: .signaled(signal: 31), logTail: line)
        #expect(end.0 == .crashed)
        #expect(end.1["reason"]?.stringValue == "seccomp")
        #expect(end.1["signal_name"]?.stringValue == "SIGSYS")
        #expect(end.1["syscall"]?.stringValue == "ioctl")
        #expect(end.1["syscall_nr"]?.intValue == 16)
        #expect(end.1["thread"]?.stringValue == "vcpu0")
        // What a jail's supervisor wrote for a kill it could explain wins over the bare signal.
        let oom = JSONValue.object([("state", .string("crashed")), ("reason", .string("out of memory: ...")), ("signal", .int(9))])
        #expect(endRecord(exitJSON: oom, end: .signaled(signal: 9), logTail: "").1 == oom)
        // A stale or foreign exit.json without a signal does not explain a signal.
        let stopped = JSONValue.object([("state", .string("stopped")), ("exit_status", .int(0))])
        #expect(endRecord(exitJSON: stopped, end: .signaled(signal: 9), logTail: "").1["reason"]?.stringValue == "killed by signal 9")
    }

    @Test func methodsOfKnownPaths() {
        #expect(API.allowedMethods(for: "/v1/vms")?.map(\.rawValue) == ["GET", "POST"])
        #expect(API.allowedMethods(for: "/v1/vms/web")?.map(\.rawValue) == ["GET", "DELETE"])
        #expect(API.allowedMethods(for: "/v1/vms/web/stop")?.map(\.rawValue) == ["POST"])
        #expect(API.allowedMethods(for: "/v1/vms//stop") == nil)
        #expect(API.allowedMethods(for: "/v1/vms/web/fly") == nil)
        #expect(API.allowedMethods(for: "/v2") == nil)
    }

    @Test func prometheusTextFormat() {
        var f = Metrics.Family(name: "pvmm_x_total", help: "Things.", type: "counter")
        f.samples = [([("vm", "a\"b\\c\nd")], "5")]
        #expect(Metrics.render(f) == "# HELP pvmm_x_total Things.\n# TYPE pvmm_x_total counter\npvmm_x_total{vm=\"a\\\"b\\\\c\\nd\"} 5\n")
    }

    @Test func daemonOptions() throws {
        let o = try DaemonOptions(arguments: ["--socket", "/tmp/a.sock", "--state-dir", "/tmp/s", "--log-format", "json"])
        #expect((o.socket, o.stateDir, o.logFormat, o.testTCPPort == nil) == ("/tmp/a.sock", "/tmp/s", "json", true))
        let d = try DaemonOptions(arguments: [])
        #expect((d.socket, d.stateDir) == ("/run/pvmm/pvmm.sock", "/var/lib/pvmm"))
        // Jailed by default when the daemon can jail (root); --no-jail opts out.
        #expect(d.jail == (geteuid() == 0))
        #expect(try DaemonOptions(arguments: ["--no-jail"]).jail == false)
        if geteuid() == 0 {
            #expect(try DaemonOptions(arguments: ["--no-jail", "--jail"]).jail)
        } else {
            #expect(throws: DaemonUsageError.self) { try DaemonOptions(arguments: ["--jail"]) }
        }
        for bad in [["--log-format", "xml"], ["--socket"], ["--frobnicate"], ["--test-tcp-port", "0"],
                    ["--socket", "/" + String(repeating: "s", count: 120)], ["--state-dir", "/" + String(repeating: "d", count: 40)]] {
            #expect(throws: DaemonUsageError.self) { try DaemonOptions(arguments: bad) }
        }
    }
}
