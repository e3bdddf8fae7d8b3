#if canImport(Glibc)
import Glibc
#endif
import Devices
import VMM

/// `--state-dir DIR`: what outlives this process. Each file is written to a temporary
/// name and renamed, so a reader never sees half of one.
struct StateDirectory {
    let path: String

    /// DIR/exit.json: how the VM ended (VMExit.record).
    func writeExit(_ record: JSONValue) {
        write("exit.json", record.line)
    }

    /// DIR/console.log: the console ring at the end (the last 64 KiB of output).
    func writeConsoleLog(_ bytes: [UInt8]) {
        write("console.log", bytes)
    }

    func write(_ name: String, _ bytes: [UInt8]) {
        let tmp = "\(path)/.\(name).\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return report(name, "create \(tmp)") }
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
