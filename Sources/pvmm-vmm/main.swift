// pvmm-vmm: one VM's VMM process. `pvmm run` execs it with the VM definition as JSON
// on an inherited fd (`--config-fd N`, see VMMOptions); it runs the VM with the console on stdin/stdout and
// exits with the VM's status. Deliberately free of ArgumentParser and Foundation.
import Devices
import Sandbox
import VMM
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, status: Int32) -> Never {
    writeError("pvmm: \(message)\n")
    exit(status)
}

let options: VMMOptions
do { options = try VMMOptions(arguments: Array(CommandLine.arguments.dropFirst())) }
catch { fail(error.message, status: 2) }
let config = options.config

let vm: VM
do { vm = try VM(config: config, console: FDSink(fd: STDOUT_FILENO)) }
catch { fail(options.flagNames ? error.flagDescription : error.description, status: error.isUsageError ? 2 : 1) }

// Everything privileged is open (/dev/kvm, images, taps); no thread has started: the
// process-wide filter now, so every thread inherits it and adds its role's own.
do { try Seccomp.installProcessFilter(mode: options.seccomp) } catch { fail("\(error)", status: 1) }

let terminal = Terminal.attach(to: vm)
do { try vm.start() } catch {
    terminal.restore()
    fail("\(error)", status: 1)
}
let end = vm.wait()
terminal.restore()
terminal.reportStopKey()
switch end {
case .crashed, .failed: writeError("\(end)\n")
default: break
}
// Benchmarks read the exit counts (Scripts/bench-*): exits per unit of work.
if getenv("PVMM_STATS") != nil {
    let s = vm.stats
    // Per virtio device: NAME.requests, NAME.notifications (queue kicks received),
    // NAME.interrupts (irqfd writes).
    let devices = s.devices.map {
        " \($0.name).requests=\($0.requests.value) \($0.name).notifications=\($0.notifications.value) \($0.name).interrupts=\($0.interrupts.value)"
    }.joined()
    writeError("pvmm-stats: exits=\(s.totalExits) pio=\(s.pio.value) mmio=\(s.mmio.value) kicks=\(s.interrupted.value)\(devices)\n")
}
exit(end.exitStatus)
