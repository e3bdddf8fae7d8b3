// pvmm-vmm: one VM's VMM process. `pvmm run` (and the daemon) exec it with the VM
// definition as JSON on an inherited fd (`--config-fd N`, see VMMOptions); it runs the
// VM with the console in a ring that goes to stdout (unless --no-stdio) and to control
// socket clients (--control), and exits with the VM's status. Deliberately free of
// ArgumentParser and Foundation.
import CKVM
import Devices
import HostNet
import Sandbox
import VMM
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, status: Int32) -> Never {
    writeError("pvmm: \(message)\n")
    exit(status)
}

// One malloc arena for all threads: every thread here allocates only while setting up or
// on rare control paths, and each extra arena would cost resident pages (< 5 MiB goal).
_ = ckvm_single_malloc_arena()

let options: VMMOptions
do { options = try VMMOptions(arguments: Array(CommandLine.arguments.dropFirst())) }
catch { fail(error.message, status: 2) }
var config = options.config
// The jail keeps no fd it did not open itself but stdin, stdout, stderr and what the
// VM needs: taps handed over (the daemon's), a snapshot's memory image.
if options.jail {
    let handed = config.nets.compactMap { n -> Int32? in if case .fd(let fd) = n.backend { fd } else { nil } }
    do { try Jail.closeInheritedFDs(keeping: handed + (options.restore.map { [$0.memoryFD] } ?? [])) }
    catch { fail("\(error)", status: 1) }
}
let state = options.stateDir.map { StateDirectory(path: $0) }

/// Ends a VMM that never ran its VM: exit.json says why, then the usual message.
func failEarly(_ message: String, status: Int32) -> Never {
    state?.writeExit(.object([("state", .string("crashed")), ("exit_status", .int(status)), ("reason", .string(message))]))
    fail(message, status: status)
}

let hub: ConsoleHub
do {
    hub = try ConsoleHub()
    if options.noStdio { try hub.stopOnTerminationSignals() } else { try hub.attachStdout() }
    try hub.attachStderr()
    // The socket exists before the (slower) machine build, so a supervisor can connect at once.
    if let path = options.controlPath { try hub.listen(path: path) }
} catch { failEarly(error.description, status: error.isUsageError ? 2 : 1) }

// Into the jail before anything is opened by path: the kernel and disks as /kernel and
// /diskN, /dev/kvm, nothing else. The control socket and the state directory are open
// already; the VMM becomes the first process of a pid namespace, this process its
// supervisor (JailSupervisor.swift).
var preopenedNets: [any FrameChannel]?
/// The definition with the host's paths, for snapshots of a jailed VM.
var outside: VMConfig?
if options.jail {
    var limits = JailLimits(memoryMiB: config.memoryMiB, cpus: config.cpus)
    if let mib = options.jailMemoryMiB { limits.memoryBytes = UInt64(mib) << 20 }
    let terminal = SavedTerminal()
    state?.startHandOff()
    let supervisor: Jail.Supervisor?
    do { supervisor = try Jail.fork(limits: limits) } catch { failEarly("\(error)", status: 1) }
    if let supervisor { superviseJail(supervisor, options: options, state: state, terminal: terminal) }
    state?.handOffAsVMM()
    // Taps are opened and passt started here, in the host's net namespace (passt inside
    // the VMM's pid namespace, so it ends with it).
    do { preopenedNets = try VM.openNets(config.nets) } catch {
        failEarly(options.flagNames ? error.flagDescription : error.description, status: error.isUsageError ? 2 : 1)
    }
    outside = config
    do { config = try Jail.enter(config) } catch { failEarly("\(error)", status: 1) }
}

// A restored VM's console history comes back first (what `logs` and a replaying
// `console` show), then its new output follows.
if let r = options.restore { r.snapshot.consoleLog.withUnsafeBytes { hub.ring.write($0) } }
let vm: VM
do {
    vm = try VM(config: config, console: hub.ring, resetPolicy: options.onReset, observer: hub.stateChanged, log: hub.log,
                restore: options.restore, nets: preopenedNets)
}
catch { failEarly(options.flagNames ? error.flagDescription : error.description, status: error.isUsageError ? 2 : 1) }
vm.snapshotDefinition = outside

// /dev/kvm and the images are open: the jail gives up root and sets its limits.
if options.jail {
    do {
        try Jail.limitResources()
        try Jail.dropPrivileges(uid: options.uid, gid: options.gid)
    } catch { failEarly("\(error)", status: 1) }
}

// Everything privileged is open (/dev/kvm, images, taps, the control socket) and no
// thread has started: the process-wide filter now, so every thread inherits it and adds
// its role's own (spawnThread).
do { try Seccomp.installProcessFilter(mode: options.seccomp) } catch { failEarly("\(error)", status: 1) }

do { try hub.start(vm: vm) } catch { failEarly(error.description, status: 1) }
let terminal = options.noStdio ? nil : Terminal.attach(to: vm)
do { try vm.start() } catch {
    terminal?.restore()
    _ = vm.wait()
    state?.writeExit(VMExit.failed("\(error)").record)
    hub.finish()
    fail("\(error)", status: 1)
}
// The guest runs: the supervisor settles KVM's leftovers of the set-up meanwhile.
vm.settleIOBus()
let end = vm.wait()
terminal?.restore()
terminal?.reportStopKey()
// History first, then how it ended (a supervisor that sees exit.json finds both), then
// the last output and events reach their readers and the socket goes away.
state?.writeConsoleLog(hub.ring.contents())
state?.writeExit(end.record)
hub.finish()
switch end {
case .crashed, .failed: writeError("\(end)\n")
default: break
}
// Benchmarks read the exit counts (Scripts/bench-*): exits per unit of work.
if getenv("PVMM_STATS") != nil {
    let s = vm.stats
    // Per virtio device: NAME.requests, NAME.notifications (queue kicks received),
    // NAME.interrupts (irqfd writes).
    // virtio-net devices add rx/tx packets and bytes and drops by reason (docs/devices.md).
    let devices = s.devices.map { " " + $0.summary }.joined()
    writeError("pvmm-stats: exits=\(s.totalExits) pio=\(s.pio.value) mmio=\(s.mmio.value) kicks=\(s.interrupted.value)\(devices)\n")
}
exit(end.exitStatus)
