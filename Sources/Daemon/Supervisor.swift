import CSupervise
import CSys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a watched VMM process ended, as far as the daemon can know.
public enum ProcessEnd: Sendable, Equatable {
    /// The daemon's own child, reaped: the waitpid status.
    case exited(status: Int32)
    case signaled(signal: Int32)
    /// A process the daemon re-adopted after a restart: it is not our child, so only its
    /// exit.json says how it ended.
    case unknown
}

/// Starts VMM processes and tells when any watched process ends, child or not.
///
/// One thread blocks in epoll_wait over a pidfd per process (pidfd_open(2)): a process that
/// a previous daemon started (re-adopted, not our child) is watched the same way as our
/// own, and children are reaped with waitid(P_PIDFD) so their wait status is recorded.
public final class ProcessWatcher: @unchecked Sendable {
    private let epfd: Int32
    private let lock = NSLock()
    private var watched: [Int32: (pid: pid_t, child: Bool, token: UInt64)] = [:]
    private let onEnd: @Sendable (_ pid: pid_t, _ token: UInt64, ProcessEnd) -> Void

    public init(onEnd: @escaping @Sendable (_ pid: pid_t, _ token: UInt64, ProcessEnd) -> Void) {
        epfd = csys_epoll_create()
        self.onEnd = onEnd
        let t = Thread { [unowned self] in self.loop() }
        t.name = "pvmmd-reaper"
        t.start()
    }

    /// Watches `pid`; `onEnd` runs (on the watcher thread) once it has ended. `token`
    /// comes back with it so the caller can tell one run of a VM from the next.
    public func watch(pid: pid_t, child: Bool, token: UInt64) {
        let fd = csupervise_pidfd_open(pid)
        guard fd >= 0 else {
            // Already gone (ESRCH): for a child, reap it now.
            var st: Int32 = 0
            let end: ProcessEnd = child && waitpid(pid, &st, WNOHANG) == pid ? Self.decode(st) : .unknown
            onEnd(pid, token, end)
            return
        }
        lock.lock()
        watched[fd] = (pid, child, token)
        lock.unlock()
        _ = csys_epoll_add(epfd, fd, csys_epoll_in())
    }

    static func decode(_ st: Int32) -> ProcessEnd {
        let sig = st & 0x7F
        if sig == 0 { return .exited(status: (st >> 8) & 0xFF) }
        return .signaled(signal: sig)
    }

    private func loop() {
        var ready = [Int32](repeating: 0, count: 64)
        var bits = [UInt32](repeating: 0, count: 64)
        while true {
            let n = csys_epoll_wait(epfd, &ready, &bits, Int32(ready.count), -1)
            if n < 0 { if n == -EINTR { continue }; return }
            for i in 0..<Int(n) {
                let fd = ready[i]
                lock.lock()
                let entry = watched.removeValue(forKey: fd)
                lock.unlock()
                guard let entry else { continue }
                _ = csys_epoll_remove(epfd, fd)
                var end = ProcessEnd.unknown
                if entry.child {
                    var st: Int32 = 0
                    // The pidfd polls readable at exit; the zombie is reapable by then.
                    if csupervise_reap_pidfd(fd, &st) == 1 { end = Self.decode(st) }
                }
                close(fd)
                onEnd(entry.pid, entry.token, end)
            }
        }
    }
}

/// Where a VM's files live: DIR/vms/NAME/ holds the daemon's files (config.json,
/// record.json, vmm.pid, vmm.log) and the VMM's (control.sock, exit.json, console.log).
public struct VMPaths: Sendable {
    public let dir: String
    public init(stateDir: String, name: String) { dir = stateDir + "/vms/" + name }
    public var config: String { dir + "/config.json" }
    public var record: String { dir + "/record.json" }
    public var pidFile: String { dir + "/vmm.pid" }
    public var log: String { dir + "/vmm.log" }
    public var control: String { dir + "/control.sock" }
    public var exit: String { dir + "/exit.json" }
    public var consoleLog: String { dir + "/console.log" }
    /// Present until the first start of a VM created from a snapshot: the directory.
    public var restore: String { dir + "/restore" }
}

public enum SpawnError: Error, CustomStringConvertible {
    case system(call: String, errno: Int32)
    public var description: String {
        switch self {
        case .system(let call, let e): "\(call): \(String(cString: strerror(e)))"
        }
    }
}

/// Starts one pvmm-vmm for a VM: its own session (so a signal to the daemon's group never
/// reaches it and it outlives the daemon), stdin /dev/null, stdout/stderr appended to
/// vmm.log, the definition as JSON on fd 3 (`--config-fd 3`). Returns its pid.
public func spawnVMM(executable: String, configJSON: [UInt8], paths: VMPaths, extraFDs: [Int32] = [],
                     extraArguments: [String] = []) throws(SpawnError) -> pid_t {
    var p: [Int32] = [0, 0]
    let pe = csupervise_pipe_cloexec(&p)
    guard pe == 0 else { throw .system(call: "pipe2", errno: -pe) }
    defer { close(p[0]) }
    let logFD = open(paths.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard logFD >= 0 else { close(p[1]); throw .system(call: "open \(paths.log)", errno: errno) }
    defer { close(logFD) }
    // The child's fds 3, 4, ... come from these; copies above 64 first, so no dup2 below
    // overwrites a source that a later one still needs (a tap opened as fd 4, say).
    let sources = ([p[0]] + extraFDs).map { fcntl($0, F_DUPFD_CLOEXEC, Int32(64)) }
    defer { sources.forEach { if $0 >= 0 { close($0) } } }
    guard !sources.contains(where: { $0 < 0 }) else { close(p[1]); throw .system(call: "fcntl F_DUPFD_CLOEXEC", errno: errno) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, logFD, 1)
    posix_spawn_file_actions_adddup2(&actions, logFD, 2)
    // The definition on 3; handed-over fds (taps) at 4, 5, ... in order; everything else
    // is close-on-exec.
    for (i, fd) in sources.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + i)) }
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    // glibc's POSIX_SPAWN_SETSID (0x80): a session and process group of its own.
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attr, &mask)
    var dfl = sigset_t()
    sigemptyset(&dfl)
    sigaddset(&dfl, SIGPIPE); sigaddset(&dfl, SIGTERM); sigaddset(&dfl, SIGINT); sigaddset(&dfl, SIGCHLD)
    posix_spawnattr_setsigdefault(&attr, &dfl)
    posix_spawnattr_setflags(&attr, Int16(0x80 | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv = [executable, "--config-fd", "3", "--control", paths.control, "--state-dir", paths.dir,
                "--no-stdio", "--on-reset", "restart"] + extraArguments
    let cArgv = argv.map { strdup($0) } + [nil]
    defer { cArgv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attr, cArgv, environ)
    guard rc == 0 else { close(p[1]); throw .system(call: "posix_spawn \(executable)", errno: rc) }
    // The definition is a few hundred bytes: far below the pipe's buffer, so this never
    // waits on the child. The child reads to EOF.
    configJSON.withUnsafeBytes { b in
        var off = 0
        while off < b.count {
            let n = write(p[1], b.baseAddress! + off, b.count - off)
            if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
            off += n
        }
    }
    close(p[1])
    return pid
}

/// The kernel's start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since
/// boot): with the pid it identifies one process, so a recycled pid is never re-adopted.
public func processStartTime(_ pid: pid_t) -> UInt64? {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = s.lastIndex(of: ")") else { return nil }
    // Fields after the command name (which may contain spaces): state is field 3.
    let fields = s[s.index(after: close)...].split(separator: " ")
    guard fields.count > 19 else { return nil }
    return UInt64(fields[19])
}
