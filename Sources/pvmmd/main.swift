// pvmmd: the pvmm daemon (`pvmm daemon` execs it). Its own executable so the HTTP server
// libraries (NIO, Hummingbird) are never loaded by `pvmm run` or the per-VM pvmm-vmm.
import Daemon
#if canImport(Glibc)
import Glibc
#endif

let options: DaemonOptions
do { options = try DaemonOptions(arguments: Array(CommandLine.arguments.dropFirst())) } catch {
    let text = error.description + "\n"
    _ = text.withCString { write(error.status == 0 ? 1 : 2, $0, strlen($0)) }
    exit(error.status)
}
do { try await runDaemon(options) } catch {
    let text = "pvmm daemon: \(error)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(error is DaemonUsageError ? (error as! DaemonUsageError).status : 1)
}
