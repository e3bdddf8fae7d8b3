#if canImport(Glibc)
import Glibc
#endif
import Devices
import Sandbox
import VMDefinition
import VMM

/// The terminal's settings before the VMM could make it raw: a VMM killed by a signal
/// cannot restore them, its supervisor does.
struct SavedTerminal {
    private var settings = termios()
    private let saved: Bool

    init() {
        var t = termios()
        saved = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &t) == 0
        settings = t
    }

    func restore() {
        guard saved else { return }
        var t = settings
        tcsetattr(STDIN_FILENO, TCSANOW, &t)
    }
}

/// The parent of a jailed VMM (`--jail`), outside its namespaces: holds none of the VM's
/// fds, passes termination signals on, and once the VMM is gone removes its cgroup and
/// its control socket (a path the VMM cannot reach from its root), writes exit.json when
/// the VMM was killed before it could (out of memory in its cgroup, a signal), and ends
/// as the VMM did: the same exit status, or death by the same signal.
func superviseJail(_ supervisor: Jail.Supervisor, options: VMMOptions, state: StateDirectory?,
                   terminal: SavedTerminal) -> Never {
    _ = try? Jail.closeInheritedFDs(keeping: [supervisor.lifeline, state?.directory, state?.handOffReadFD].compactMap { $0 })
    let end: (status: Int32, translated: Int32)
    do { end = try supervisor.wait() } catch {
        writeError("pvmm: \(error)\n")
        exit(1)
    }
    let oomKills = supervisor.cgroup.outOfMemoryKills
    supervisor.cgroup.remove()
    if let path = options.controlPath { unlink(path) }
    // What the VMM wrote, renamed into place; the temporary files of what it did not
    // reach go (a fresh set, made and discarded, covers both names).
    state?.publishHandedOff()
    let fresh = options.stateDir.map { StateDirectory(path: $0) }
    let signal = end.status & 0x7F
    guard signal != 0 else {
        fresh?.discardPending()
        exit((end.status >> 8) & 0xFF)
    }
    terminal.restore()
    // The VMM died of SIGKILL for a signal it did not catch: the supervisor dies of that.
    let reported = end.translated != 0 && signal == SIGKILL ? end.translated : signal
    let limitMiB = supervisor.limits.memoryBytes >> 20
    let reason = oomKills > 0 && signal == SIGKILL
        ? "out of memory: the jail's memory limit of \(limitMiB) MiB (cgroup)"
        : signal == SIGSYS ? "seccomp" : "killed by signal \(reported)"
    if oomKills > 0 && signal == SIGKILL { writeError("pvmm: the VMM was killed: \(reason)\n") }
    fresh?.writeExit(.object([("state", .string("crashed")), ("reason", .string(reason)), ("signal", .int(Int(reported))),
                              ("signal_name", .string(signalName(reported)))]))
    fresh?.discardPending()
    Jail.dieOf(reported)
}

