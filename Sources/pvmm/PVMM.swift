import ArgumentParser
import DaemonClient
import Devices
#if canImport(Glibc)
import Glibc
#endif

@main
struct PVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pvmm",
        abstract: "A paravirtual KVM virtual machine monitor.",
        version: PVMMVersion.text,
        subcommands: [Run.self, Version.self, DaemonCommand.self, ListCommand.self, CreateCommand.self, StartCommand.self, PauseCommand.self,
                      ResumeCommand.self, StopCommand.self, KillCommand.self, RebootCommand.self, SnapshotCommand.self, RemoveCommand.self,
                      InfoCommand.self, LogsCommand.self, EventsCommand.self, ConsoleCommand.self]
    )

    /// ArgumentParser exits 64 on usage errors; pvmm's contract is status 2 for any bad
    /// input (flags, files, host limits), so parsing errors are reported here.
    static func main() {
        let arguments = CommandLine.arguments
        if arguments.count > 1, arguments[1] == "run", let flags = RunFlags(fastParsing: arguments[2...]) {
            do { try flags.run() } catch { report(error) }
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch { report(error) }
    }

    static func report(_ error: any Error) -> Never {
        if exitCode(for: error) == .success { exit(withError: error) }
        if let e = error as? UsageError {
            writeStderrLine("pvmm: \(e.message)")
            Glibc.exit(e.status)
        }
        writeStderrLine(fullMessage(for: error))
        Glibc.exit(2)
    }
}

/// A problem to report on stderr with a status (2 for bad input, 1 for failures).
struct UsageError: Error {
    let message: String
    var status: Int32 = 2
}
