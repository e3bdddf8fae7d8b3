#if canImport(Glibc)
import Glibc
#endif
import Devices
import VMM

/// `--state-dir DIR`: what outlives this process. Each file is written to a temporary
/// name and renamed, so a reader never sees half of one.
///
/// The temporary files are created when the VMM starts, before its seccomp filter: a
/// running VMM opens no new paths (docs/security.md), so at the end it only writes,
/// syncs and renames what it already holds.
// @unchecked Sendable: used by the main thread only (start and end of the VMM).
final class StateDirectory: @unchecked Sendable {
    let path: String
    /// DIR itself: every file is made and renamed relative to it, so it works from inside
    /// the jail (opened before pivot_root) as well as outside.
    let directory: Int32
    /// The temporary names, fixed at start (inside a pid namespace getpid() is 1).
    private let suffix: String
    private var pending: [String: Int32] = [:]
    /// With --jail: a pipe to the supervisor. The VMM runs as another uid by the end and
    /// cannot rename in DIR, so it writes a file's first letter here once the file is
    /// written and synced, and the supervisor renames it once the VMM is gone.
    private var handOff: (read: Int32, write: Int32)?
    static let published = ["console.log", "exit.json"]

    init(path: String) {
        self.path = path
        directory = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        suffix = ".\(getpid())"
        if directory < 0 { report("state", "open \(path)"); return }
        for name in ["exit.json", "console.log"] {
            let fd = openat(directory, temporaryName(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            if fd >= 0 { pending[name] = fd }
        }
    }

    deinit { discardPending() }

    /// Files never written (the VM's end was not reached) leave no temporary behind.
    func discardPending() {
        for (name, fd) in pending {
            close(fd)
            unlinkat(directory, temporaryName(name), 0)
        }
        pending = [:]
    }

    /// Before the jail forks: the pipe to the supervisor.
    func startHandOff() {
        var p: [Int32] = [0, 0]
        guard pipe(&p) == 0 else { return report("state", "pipe") }
        for fd in p { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // The supervisor reads what is there once the VMM is gone, never waiting.
        _ = fcntl(p[0], F_SETFL, O_NONBLOCK)
        handOff = (p[0], p[1])
    }

    /// In the jailed VMM: it keeps the writing end only.
    func handOffAsVMM() {
        guard let h = handOff else { return }
        close(h.read)
        handOff = (-1, h.write)
    }

    /// The supervisor's end, to keep open across closing every other fd.
    var handOffReadFD: Int32? { handOff.map(\.read) }

    /// In the supervisor, once the VMM is gone: renames what it finished, in its order.
    func publishHandedOff() {
        guard let h = handOff else { return }
        close(h.write)
        var bytes = [UInt8](repeating: 0, count: 16)
        let n = read(h.read, &bytes, bytes.count)
        close(h.read)
        handOff = nil
        guard n > 0 else { return }
        for b in bytes[0..<n] {
            guard let name = Self.published.first(where: { $0.utf8.first == b }) else { continue }
            if renameat(directory, temporaryName(name), directory, name) != 0 { report(name, "rename \(path)/\(temporaryName(name))") }
        }
    }

    func temporaryName(_ name: String) -> String { ".\(name)\(suffix)" }

    /// DIR/exit.json: how the VM ended (VMExit.record).
    func writeExit(_ record: JSONValue) {
        write("exit.json", record.line)
    }

    /// DIR/console.log: the console ring at the end (the last 64 KiB of output).
    func writeConsoleLog(_ bytes: [UInt8]) {
        write("console.log", bytes)
    }

    func write(_ name: String, _ bytes: [UInt8]) {
        guard directory >= 0 else { return }
        let tmp = temporaryName(name)
        // The file made at start; a second write of one name (or a start that could not
        // create it) opens it again, which only works without the seccomp filter.
        let fd = pending.removeValue(forKey: name) ?? openat(directory, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return report(name, "create \(path)/\(tmp)") }
        _ = ftruncate(fd, 0)
        guard bytes.withUnsafeBytes({ writeAll(fd, $0) }) else {
            report(name, "write \(path)/\(tmp)")
            close(fd)
            unlinkat(directory, tmp, 0)
            return
        }
        fsync(fd)
        close(fd)
        if let h = handOff, h.write >= 0 {
            var letter = name.utf8.first!
            if Glibc.write(h.write, &letter, 1) != 1 { report(name, "telling the jail's supervisor") }
            return
        }
        if renameat(directory, tmp, directory, name) != 0 { report(name, "rename \(path)/\(tmp)") }
    }

    func report(_ name: String, _ what: String) {
        writeError("pvmm: --state-dir: \(what): \(String(cString: strerror(errno)))\n")
    }
}
