import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct PVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pvmm",
        abstract: "A paravirtual KVM virtual machine monitor.",
        version: PVMMVersion.text,
        subcommands: [Run.self, Version.self]
    )

    /// ArgumentParser exits 64 on usage errors; pvmm's contract is status 2 for any bad
    /// input (flags, files, host limits), so parsing errors are reported here.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            if let e = error as? UsageError {
                printError("pvmm: \(e.message)\n")
                Glibc.exit(e.status)
            }
            printError(fullMessage(for: error) + "\n")
            Glibc.exit(2)
        }
    }
}

/// A problem to report on stderr with a status (2 for bad input, 1 for failures).
struct UsageError: Error {
    let message: String
    var status: Int32 = 2
}

/// Writes a line to stderr with write(2): no stdio buffering, usable from any thread.
func printError(_ s: String) {
    var line = s
    if !line.hasSuffix("\n") { line += "\n" }
    line.utf8CString.withUnsafeBufferPointer { p in
        var off = 0
        let n = p.count - 1
        while off < n {
            let w = write(STDERR_FILENO, p.baseAddress! + off, n - off)
            if w <= 0 { if w < 0 && errno == EINTR { continue }; return }
            off += w
        }
    }
}
