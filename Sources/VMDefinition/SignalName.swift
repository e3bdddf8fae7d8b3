#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL, SIGSYS, ...: how exit records name the signal a VMM died of (pvmm-vmm's jail
/// supervisor and the daemon write the same names).
public func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGABRT: "SIGABRT",
                                  SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGSEGV: "SIGSEGV", SIGPIPE: "SIGPIPE",
                                  SIGTERM: "SIGTERM", SIGSYS: "SIGSYS"]
    return names[signal] ?? "signal \(signal)"
}
