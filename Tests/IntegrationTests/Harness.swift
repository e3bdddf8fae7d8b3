import Foundation
@_exported import TestSupport
import Testing

/// Where the repository and its build products are.
enum Paths {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    /// `swift build` output (Scripts/test builds the products before `swift test`).
    static var binDir: String { ProcessInfo.processInfo.environment["PVMM_BIN_DIR"] ?? root + "/.build/debug" }
    static var pvmm: String { binDir + "/pvmm" }
    static var guest: String { root + "/guests/pvos/build/pvos.elf" }

    static func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-tests-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
}

/// A child process (pvmm or QEMU) with its stdin/stdout/stderr on pipes or a pty.
/// Every wait has a deadline; `deinit` kills the process group if it is still alive, so a
/// failing test never leaves a VM behind.
final class Child {
    let pid: pid_t
    private(set) var input: Int32
    let output: Int32
    let errorOutput: Int32
    private(set) var stdout = [UInt8]()
    private(set) var stderr = [UInt8]()
    private(set) var status: Int32?

    /// `PVMM_TEST_POLL_US=N` runs every `pvmm run` of the suite with `--poll-us N` (e.g. 0:
    /// the same tests on the interrupt path; Scripts/test runs both). Not with `--config`,
    /// where the flag is refused.
    static func withPollFlag(_ argv: [String]) -> [String] {
        guard let n = ProcessInfo.processInfo.environment["PVMM_TEST_POLL_US"], !n.isEmpty, argv.count >= 2, argv[0] == Paths.pvmm,
              argv[1] == "run", !argv.contains("--config"), !argv.contains("--poll-us") else { return argv }
        return [argv[0], "run", "--poll-us", n] + argv[2...]
    }

    /// Spawns `argv` in a new process group. With `pty`, stdin/stdout are that terminal.
    init(_ argv: [String], pty: (master: Int32, slave: Int32)? = nil, environment: [String: String] = [:]) throws {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        // Close-on-exec: tests spawn children in parallel, and a pipe end leaked into
        // another test's child would hold back this child's EOF (spawn's dup2 clears the
        // flag on the child's own 0, 1 and 2).
        func cloexecPipe(_ fds: inout [Int32]) -> Bool {
            guard pipe(&fds) == 0 else { return false }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return true
        }
        guard cloexecPipe(&errPipe) else { throw HarnessError(description: "pipe") }
        if pty == nil {
            guard cloexecPipe(&inPipe), cloexecPipe(&outPipe) else { throw HarnessError(description: "pipe") }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let pty {
            posix_spawn_file_actions_adddup2(&actions, pty.slave, 0)
            posix_spawn_file_actions_adddup2(&actions, pty.slave, 1)
        } else {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        }
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // A pty child gets its own session (glibc's POSIX_SPAWN_SETSID = 0x80), others a
        // process group; either way kill(-pid) reaches everything it started.
        posix_spawnattr_setflags(&attr, Int16(pty != nil ? 0x80 : POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let cArgv = Self.withPollFlag(argv).map { strdup($0) } + [nil]
        defer { (cEnv + cArgv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgv, cEnv)
        guard rc == 0 else { throw HarnessError(description: "spawn \(argv[0]): \(String(cString: strerror(rc)))") }
        self.pid = pid
        close(errPipe[1])
        if let pty {
            input = dup(pty.master)
            output = dup(pty.master)
        } else {
            close(inPipe[0]); close(outPipe[1])
            input = inPipe[1]
            output = outPipe[0]
        }
        errorOutput = errPipe[0]
        _ = fcntl(output, F_SETFL, fcntl(output, F_GETFL) | O_NONBLOCK)
        _ = fcntl(errorOutput, F_SETFL, fcntl(errorOutput, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        if status == nil {
            kill(-pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
        }
        if input >= 0 { close(input) }
        close(output); close(errorOutput)
    }

    var text: String { String(decoding: stdout, as: UTF8.self) }
    var errorText: String { String(decoding: stderr, as: UTF8.self) }

    /// Reads whatever is available within `ms`.
    private func pump(ms: Int32) {
        var fds = [pollfd(fd: output, events: Int16(POLLIN), revents: 0), pollfd(fd: errorOutput, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 2, ms) > 0 else { return }
        var buf = [UInt8](repeating: 0, count: 65536)
        for (i, f) in fds.enumerated() where f.revents != 0 {
            let n = read(f.fd, &buf, buf.count)
            if n > 0 {
                if i == 0 { stdout += buf[..<n] } else { stderr += buf[..<n] }
            }
        }
    }

    /// Waits until stdout contains `needle` after `from` bytes; returns the text up to it.
    @discardableResult
    func expect(_ needle: String, after from: Int = 0, timeout: Double = 10) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let r = text.utf8.count >= from ? String(decoding: stdout[from...], as: UTF8.self).range(of: needle) : nil {
                return String(String(decoding: stdout[from...], as: UTF8.self)[..<r.upperBound])
            }
            if status != nil || reap() != nil {
                pump(ms: 0)
                if String(decoding: stdout[min(from, stdout.count)...], as: UTF8.self).contains(needle) { continue }
                throw HarnessError(description: "process exited (\(status!)) before printing \(needle.debugDescription); stdout: \(text.debugDescription) stderr: \(errorText.debugDescription)")
            }
            pump(ms: 20)
        }
        throw HarnessError(description: "timed out waiting for \(needle.debugDescription); stdout: \(text.debugDescription) stderr: \(errorText.debugDescription)")
    }

    /// Sends `line` and waits for the next prompt; returns the output in between.
    func command(_ line: String, prompt: String = "pvos> ", timeout: Double = 10) throws -> String {
        let mark = stdout.count
        send(line + "\n")
        return try expect(prompt, after: mark, timeout: timeout)
    }

    func send(_ s: String) {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    /// The child sees end of input. Closed once: a second close could hit an fd another
    /// test (running in parallel) has opened since.
    func closeInput() {
        if input >= 0 { close(input) }
        input = -1
    }

    private func reap() -> Int32? {
        var st: Int32 = 0
        if waitpid(pid, &st, WNOHANG) == pid { status = decode(st) }
        return status
    }

    private func decode(_ st: Int32) -> Int32 {
        (st & 0x7F) == 0 ? (st >> 8) & 0xFF : 128 + (st & 0x7F)
    }

    /// Waits for the process to exit (killing it at the deadline) and drains its output.
    @discardableResult
    func wait(timeout: Double = 10) throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while reap() == nil {
            if Date() >= deadline {
                kill(-pid, SIGKILL)
                var st: Int32 = 0
                waitpid(pid, &st, 0)
                status = decode(st)
                throw HarnessError(description: "did not exit within \(timeout) s; stdout: \(text.debugDescription) stderr: \(errorText.debugDescription)")
            }
            pump(ms: 20)
        }
        for _ in 0..<50 {
            let before = stdout.count + stderr.count
            pump(ms: 10)
            if stdout.count + stderr.count == before { break }
        }
        return status!
    }
}

/// `pvmm run` on the bundled guest (or `kernel`), stdin and stdout on pipes.
func bootPVMM(_ extra: [String] = [], kernel: String? = Paths.guest) throws -> Child {
    try Child([Paths.pvmm, "run"] + (kernel.map { ["--kernel", $0] } ?? []) + extra)
}

/// `pvmm run ARGS` with no input, to its end: status and stderr (for the flag checks
/// that must fail before a VM starts, or end it at once).
func runPVMMToEnd(_ args: [String]) throws -> (Int32, String) {
    let c = try Child([Paths.pvmm, "run"] + args)
    c.closeInput()
    let status = try c.wait()
    return (status, c.errorText)
}

/// A pseudo-terminal pair for tests of terminal behaviour; closed on deinit.
final class PTY {
    let master: Int32
    let slave: Int32

    init() throws {
        var m: Int32 = 0, s: Int32 = 0
        guard openpty(&m, &s, nil, nil, nil) == 0 else { throw HarnessError(description: "openpty: \(String(cString: strerror(errno)))") }
        (master, slave) = (m, s)
    }

    deinit { close(master); close(slave) }

    /// `pvmm run ARGS` with this terminal as its stdin and stdout.
    func pvmm(_ args: [String]) throws -> Child { try Child([Paths.pvmm, "run"] + args, pty: (master, slave)) }
}

