#if canImport(Glibc)
import Glibc
#endif
import CSeccomp

/// What a system call outside the allowlist gets (`--seccomp`).
public enum SeccompMode: String, Sendable, CaseIterable {
    /// SIGSYS: pvmm names the thread and the call on stderr and the process dies of SIGSYS.
    case kill
    /// Allowed, logged by the kernel (audit / dmesg): for developing new code paths.
    case log
    /// No filter.
    case off
}

/// Why a filter could not be installed.
public struct SeccompError: Error, Equatable, Sendable, CustomStringConvertible {
    public let what: String
    public let errno: Int32
    public var description: String { "seccomp: \(what): \(String(cString: strerror(errno)))" }
}

/// The seccomp filters of one VMM process (SyscallTable.swift says what each allows).
///
/// `installProcessFilter` runs once on the main thread after everything privileged is
/// opened and before the first thread that touches guest data starts; `enterRole` runs
/// first thing on every thread pvmm starts. Until the process filter is installed (tests
/// running VMs in their own process, `--seccomp off`), `enterRole` does nothing.
public enum Seccomp {
    nonisolated(unsafe) private static var active: SeccompMode = .off

    /// The mode in force in this process (`.off` before installProcessFilter).
    public static var mode: SeccompMode { active }

    /// The process-wide filter (all threads, TSYNC) and the SIGSYS reporter; every role's
    /// filter is compiled here too, for the threads to apply.
    public static func installProcessFilter(mode: SeccompMode) throws(SeccompError) {
        guard mode != .off else { return }
        let rc = cseccomp_install_reporter()
        if rc < 0 { throw SeccompError(what: "SIGSYS handler", errno: -rc) }
        try compileAll(mode: mode)
        let applied = cseccomp_apply_process(Int32(processSlot))
        if applied < 0 { throw SeccompError(what: "loading the process filter", errno: -applied) }
        active = mode
    }

    /// The compiled process filter's slot (after one per role).
    static var processSlot: Int { SeccompRole.allCases.count }

    /// Every thread role's filter (compiled, not loaded: a vCPU thread should not pay that
    /// before its first KVM_RUN) and the process filter, each into its slot. `.main` has
    /// none: the main thread is never spawned and keeps the process filter only.
    static func compileAll(mode: SeccompMode) throws(SeccompError) {
        for (slot, role) in SeccompRole.allCases.enumerated() where role != .main {
            try compile(slot: slot, rules: syscallTable.filter { $0.roles.contains(role) }, mode: mode)
        }
        try compile(slot: processSlot, rules: syscallTable, mode: mode)
    }

    /// Narrows the calling thread to its role's rows and names it in violation reports.
    public static func enterRole(_ role: SeccompRole, label: String) throws(SeccompError) {
        guard active != .off else { return }
        cseccomp_set_thread_label(label)
        let slot = SeccompRole.allCases.firstIndex(of: role)!
        let rc = cseccomp_apply(Int32(slot))
        if rc < 0 { throw SeccompError(what: "loading the \(role.rawValue) thread filter", errno: -rc) }
#if DEBUG
        if let (r, call) = testViolation, r == role {
            testViolation = nil
            _ = call.withCString { cseccomp_attempt($0) }
        }
#endif
    }

#if DEBUG
    /// Test builds only (pvmm-vmm --seccomp-test-violation ROLE:CALL): the first thread of
    /// the role makes the call just after its filter is installed.
    nonisolated(unsafe) public static var testViolation: (SeccompRole, String)?
#endif

    /// `enterRole` for thread bodies that cannot report an error: a thread that would run
    /// unfiltered ends the process instead.
    public static func enterRoleOrDie(_ role: SeccompRole, label: String) {
        do { try enterRole(role, label: label) } catch {
            let line = "pvmm: \(label): \(error)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            _exit(1)
        }
    }

    static func compile(slot: Int, rules: [SyscallRule], mode: SeccompMode) throws(SeccompError) {
        var bad: Int32 = -1
        let rc: Int32 = withRows(rules) { rows in
            cseccomp_compile(Int32(slot), mode == .log ? Int32(CSECCOMP_LOG) : Int32(CSECCOMP_TRAP), rows.baseAddress,
                             Int32(rows.count), &bad)
        }
        if rc < 0 {
            let row = bad >= 0 && Int(bad) < rules.count ? " (row \(rules[Int(bad)].name))" : ""
            throw SeccompError(what: "compiling a thread filter\(row)", errno: -rc)
        }
    }

    /// The rows as C structs; the names stay alive for the call.
    private static func withRows<R>(_ rules: [SyscallRule], _ body: (UnsafeBufferPointer<cseccomp_rule>) -> R) -> R {
        let names = rules.map { strdup($0.name) }
        defer { names.forEach { free($0) } }
        var rows: [cseccomp_rule] = []
        rows.reserveCapacity(rules.count)
        for (i, r) in rules.enumerated() {
            switch r.check {
            case .any:
                rows.append(cseccomp_rule(name: names[i], compare: Int32(CSECCOMP_ARG_NONE), arg_index: 0, mask: 0, value: 0))
            case .masked(let index, let mask, let value):
                rows.append(cseccomp_rule(name: names[i], compare: Int32(CSECCOMP_ARG_MASKED_EQ), arg_index: index,
                                          mask: mask, value: value))
            }
        }
        return rows.withUnsafeBufferPointer(body)
    }
}
