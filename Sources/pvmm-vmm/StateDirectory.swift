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
    private var pending: [String: Int32] = [:]

    init(path: String) {
        self.path = path
        for name in ["exit.json", "console.log"] {
            let fd = open(temporaryName(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            if fd >= 0 { pending[name] = fd }
        }
    }

    deinit {
        // Files never written (the VM's end was not reached) leave no temporary behind.
        for (name, fd) in pending {
            close(fd)
            unlink(temporaryName(name))
        }
    }

    func temporaryName(_ name: String) -> String { "\(path)/.\(name).\(getpid())" }

    /// DIR/exit.json: how the VM ended (VMExit.record).
    func writeExit(_ record: JSONValue) {
        write("exit.json", record.line)
    }

    /// DIR/console.log: the console ring at the end (the last 64 KiB of output).
    func writeConsoleLog(_ bytes: [UInt8]) {
        write("console.log", bytes)
    }

    func write(_ name: String, _ bytes: [UInt8]) {
        let tmp = temporaryName(name)
        // The file made at start; a second write of one name (or a start that could not
        // create it) opens it again, which only works without the seccomp filter.
        let fd = pending.removeValue(forKey: name) ?? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return report(name, "create \(tmp)") }
        _ = ftruncate(fd, 0)
        guard bytes.withUnsafeBytes({ writeAll(fd, $0) }) else {
            report(name, "write \(tmp)")
            close(fd)
            unlink(tmp)
            return
        }
        fsync(fd)
        close(fd)
        if rename(tmp, "\(path)/\(name)") != 0 { report(name, "rename \(tmp)") }
    }

    func report(_ name: String, _ what: String) {
        writeError("pvmm: --state-dir: \(what): \(String(cString: strerror(errno)))\n")
    }
}
