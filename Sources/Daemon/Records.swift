import Foundation
import VMControl
import VMDefinition

extension VMState {
    /// A VMM process exists for the VM (or should: it is being started). The daemon's
    /// `created` means defined, with no VMM yet.
    public var isActive: Bool { ![.created, .stopped, .crashed].contains(self) }
}

/// What the daemon knows about one VM beyond its definition: persisted as record.json
/// next to config.json, rewritten (atomically) on every change, so a daemon that was
/// killed finds every VM again.
public struct VMRecord: Sendable {
    public var state: VMState
    public var pid: Int32?
    /// /proc/PID/stat start time of that pid: guards against re-adopting a recycled pid.
    public var pidStart: UInt64?
    /// How the last run ended (exit.json, plus the signal when the VMM was killed).
    public var lastExit: JSONValue?
    public var createdNs: UInt64
    /// Wall-clock time of the last start.
    public var startedNs: UInt64?
    /// Running time (not paused) accumulated before `runningSinceMono`.
    public var uptimeBaseNs: UInt64 = 0
    /// CLOCK_MONOTONIC (system-wide, so valid across daemon restarts) when the VM last
    /// entered `running`; nil when not running.
    public var runningSinceMono: UInt64?

    public init(state: VMState, createdNs: UInt64) {
        self.state = state
        self.createdNs = createdNs
    }

    public func uptimeNs(now: UInt64 = monotonicNanoseconds()) -> UInt64 {
        uptimeBaseNs + (runningSinceMono.map { now > $0 ? now - $0 : 0 } ?? 0)
    }

    /// The run is over: how it ended, no process, the running time kept.
    public mutating func end(state: VMState, exit: JSONValue, now: UInt64 = monotonicNanoseconds()) {
        uptimeBaseNs = uptimeNs(now: now)
        runningSinceMono = nil
        self.state = state
        lastExit = exit
        pid = nil
        pidStart = nil
    }

    public var json: JSONValue {
        var m: [(key: String, value: JSONValue)] = [("state", .string(state.rawValue))]
        if let pid { m.append(("pid", .int(pid))) }
        if let pidStart { m.append(("pid_start", .int(pidStart))) }
        if let lastExit { m.append(("last_exit", lastExit)) }
        m.append(("created_ns", .int(createdNs)))
        if let startedNs { m.append(("started_ns", .int(startedNs))) }
        m.append(("uptime_base_ns", .int(uptimeBaseNs)))
        if let runningSinceMono { m.append(("running_since_mono_ns", .int(runningSinceMono))) }
        return .object(m)
    }

    /// Reads a record this daemon wrote; nil when it is damaged (the caller then treats
    /// the VM as created: its definition is still good).
    public init?(json v: JSONValue) {
        guard let s = v["state"]?.stringValue, let state = VMState(rawValue: s),
              let created = v["created_ns"].flatMap(uint64) else { return nil }
        self.state = state
        createdNs = created
        pid = v["pid"]?.intValue.map { Int32(truncatingIfNeeded: $0) }
        pidStart = v["pid_start"].flatMap(uint64)
        lastExit = v["last_exit"]
        startedNs = v["started_ns"].flatMap(uint64)
        uptimeBaseNs = v["uptime_base_ns"].flatMap(uint64) ?? 0
        runningSinceMono = v["running_since_mono_ns"].flatMap(uint64)
    }
}

func uint64(_ v: JSONValue) -> UInt64? { if case .number(let t) = v { UInt64(t) } else { nil } }

/// Small files written whole: temp file + rename, so a crash leaves the old or the new
/// version, never half of one. Plain system calls: these sit on every create, start and
/// state change.
enum StateFiles {
    struct Failure: Error, CustomStringConvertible {
        let path: String, call: String, errno: Int32
        var description: String { "\(call) \(path): \(String(cString: strerror(errno)))" }
    }

    static func write(_ bytes: [UInt8], to path: String) throws(Failure) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(path: tmp, call: "open", errno: errno) }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = errno
                close(fd)
                throw Failure(path: tmp, call: "write", errno: e)
            }
            off += n
        }
        close(fd)
        guard rename(tmp, path) == 0 else { throw Failure(path: path, call: "rename", errno: errno) }
    }

    /// The whole file (state files are small; more than 16 MiB is not one of ours).
    static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while out.count < 16 << 20 {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? out : nil }
            out += chunk[..<n]
        }
        return out
    }

    static func readJSON(_ path: String) -> JSONValue? {
        read(path).flatMap { try? JSONValue(parsing: $0) }
    }

    /// A VM's directory and the files in it (it has no subdirectories).
    static func removeDirectory(_ dir: String) {
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] { unlink(dir + "/" + f) }
        rmdir(dir)
    }
}

/// How a VMM run ended, from what it left (exit.json) and how the process died.
///
/// Killed by a signal: `{"state":"crashed","reason":"killed by signal N","signal":N,
/// "signal_name":"SIGKILL"}`, or what a jailed VMM's supervisor wrote for it (it knows an
/// out-of-memory kill in the VM's cgroup). SIGSYS is a seccomp violation: reason
/// `seccomp`, and the thread and call from the VMM's report line (its log's last line).
func endRecord(exitJSON: JSONValue?, end: ProcessEnd, logTail: String) -> (VMState, JSONValue) {
    if case .signaled(let sig) = end {
        var m: [(key: String, value: JSONValue)]
        if case .object(let written)? = exitJSON, exitJSON?["state"]?.stringValue == "crashed", exitJSON?["signal"] != nil {
            m = written
        } else {
            m = [("state", .string("crashed")), ("reason", .string(sig == SIGSYS ? "seccomp" : "killed by signal \(sig)")),
                 ("signal", .int(sig)), ("signal_name", .string(signalName(sig)))]
        }
        if sig == SIGSYS, let v = SeccompReport(line: logTail) {
            m.append(contentsOf: [("thread", .string(v.thread)), ("syscall", .string(v.syscall)), ("syscall_nr", .int(v.number))])
        }
        return (.crashed, .object(m))
    }
    if let e = exitJSON, let s = e["state"]?.stringValue, let state = VMState(rawValue: s),
       state == .stopped || state == .crashed {
        return (state, e)
    }
    let why: String
    switch end {
    case .exited(let status): why = "the VMM exited with status \(status) without an exit record"
    default: why = "the VMM ended while the daemon was not its parent, without an exit record"
    }
    let detail = logTail.isEmpty ? why : "\(why): \(logTail)"
    var m: [(key: String, value: JSONValue)] = [("state", .string("crashed")), ("reason", .string(detail))]
    if case .exited(let status) = end { m.append(("vmm_status", .int(status))) }
    return (.crashed, .object(m))
}

/// The last non-empty line of a VMM's log (its error message when it failed to start).
func lastLogLine(_ path: String) -> String {
    guard let fd = FileHandle(forReadingAtPath: path) else { return "" }
    defer { try? fd.close() }
    let size = (try? fd.seekToEnd()) ?? 0
    try? fd.seek(toOffset: size > 4096 ? size - 4096 : 0)
    let data = (try? fd.readToEnd()) ?? Data()
    let text = String(decoding: data, as: UTF8.self)
    return text.split(separator: "\n").last.map(String.init) ?? ""
}


/// The line a VMM's SIGSYS handler writes before it dies (Sources/CSeccomp/cseccomp.c):
/// `pvmm: seccomp: thread vcpu0 made forbidden system call execve (59); the VMM stops`.
struct SeccompReport: Equatable {
    let thread: String
    let syscall: String
    let number: Int

    init(thread: String, syscall: String, number: Int) {
        self.thread = thread
        self.syscall = syscall
        self.number = number
    }

    init?(line: String) {
        let prefix = "pvmm: seccomp: thread "
        guard line.hasPrefix(prefix) else { return nil }
        let rest = line.dropFirst(prefix.count)
        guard let made = rest.range(of: " made forbidden system call ") else { return nil }
        thread = String(rest[..<made.lowerBound])
        let call = rest[made.upperBound...]
        guard let open = call.firstIndex(of: "("), let close = call[open...].firstIndex(of: ")"),
              let n = Int(call[call.index(after: open)..<close]) else { return nil }
        syscall = String(call[..<open]).trimmingCharacters(in: .whitespaces)
        number = n
        guard !thread.isEmpty, !syscall.isEmpty else { return nil }
    }
}
