#if canImport(Glibc)
import Glibc
#endif
import Sandbox
import Devices
import VMM

/// How this VMM process was asked to run (flags), as opposed to what VM it runs (the
/// JSON definition it is handed: `--config-fd N` or `--config FILE`).
struct VMMOptions {
    var config: VMConfig
    /// Report definition errors with `pvmm run` flag names (`--memory`) rather than JSON
    /// field names (`memory_mib`): set by `pvmm run` when the user gave flags.
    var flagNames = false
    /// `--seccomp kill|log|off` (default kill): the system call filters (Sandbox).
    var seccomp = SeccompMode.kill
    /// `--jail`: namespaces, a root with only the VM's files, an unprivileged uid/gid
    /// (`--uid`/`--gid`, default nobody) once /dev/kvm and the images are open.
    var jail = false
    var uid = Jail.defaultID
    var gid = Jail.defaultID
    /// `--jail-memory-mib N`: the jail's cgroup memory limit instead of guest RAM plus
    /// JailLimits.overheadMiB.
    var jailMemoryMiB: Int?
    /// `--control PATH`: serve the control socket there (docs/control.md).
    var controlPath: String?
    /// `--state-dir DIR`: write DIR/exit.json and DIR/console.log when the VM ends.
    var stateDir: String?
    /// `--no-stdio`: the console is not on stdin/stdout (daemon mode); only the ring.
    var noStdio = false
    /// `--on-reset exit|restart`: what a guest reset does.
    var onReset = ResetPolicy.exit
    /// `--poll-us N`: overrides the definition's polling budget (0 = off).
    var pollMicroseconds: Int?
    /// `--restore DIR`: the VM is the snapshot's (docs/snapshot.md), not a definition.
    var restore: SnapshotImage?


    struct Failure: Error {
        let message: String
    }

    init(arguments: [String]) throws(Failure) {
        var source: (name: String, bytes: [UInt8])?
        var restoreDir: String?
        var forceDisks = false
        var nets: [String] = []
        var i = 0
        func value(_ flag: String) throws(Failure) -> String {
            guard i + 1 < arguments.count else { throw Failure(message: "\(flag): missing value") }
            i += 1
            return arguments[i]
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--config":
                let path = try value("--config")
                source = (path, try Self.read(path: path))
            case "--config-fd":
                let v = try value("--config-fd")
                guard let fd = Int32(v), fd >= 0 else { throw Failure(message: "--config-fd: '\(v)' is not a file descriptor") }
                source = ("config", try Self.read(fd: fd, name: "--config-fd \(fd)"))
                close(fd)
            case "--errors-as":
                let v = try value("--errors-as")
                guard v == "flags" || v == "json" else { throw Failure(message: "--errors-as: '\(v)' is not one of: flags, json") }
                flagNames = v == "flags"
            case "--seccomp":
                let v = try value("--seccomp")
                guard let mode = SeccompMode(rawValue: v) else { throw Failure(message: "--seccomp: '\(v)' is not one of: kill, log, off") }
                seccomp = mode
            case "--jail": jail = true
            case "--jail-memory-mib":
                let v = try value("--jail-memory-mib")
                guard let n = Int(v), n > 0, n <= 1 << 30 else { throw Failure(message: "--jail-memory-mib: '\(v)' is not a number of MiB") }
                jailMemoryMiB = n
            case "--uid", "--gid":
                let flag = arguments[i]
                let v = try value(flag)
                guard let n = UInt32(v) else { throw Failure(message: "\(flag): '\(v)' is not a number") }
                if flag == "--uid" { uid = n } else { gid = n }
#if DEBUG
            // Test builds only: a thread of ROLE attempts CALL right after its filter is
            // installed (SeccompTests check that the VMM dies of SIGSYS naming it).
            case "--seccomp-test-violation":
                let v = try value("--seccomp-test-violation")
                let parts = v.split(separator: ":").map(String.init)
                guard parts.count == 2, let role = SeccompRole(rawValue: parts[0]) else {
                    throw Failure(message: "--seccomp-test-violation: '\(v)' is not ROLE:SYSCALL")
                }
                Seccomp.testViolation = (role, parts[1])
#endif
            case "--control": controlPath = try value("--control")
            case "--state-dir": stateDir = try value("--state-dir")
            case "--no-stdio": noStdio = true
            case "--restore": restoreDir = try value("--restore")
            case "--force-disks": forceDisks = true
            case "--net": nets.append(try value("--net"))
            case "--on-reset":
                let v = try value("--on-reset")
                guard let p = ResetPolicy(rawValue: v) else { throw Failure(message: "--on-reset: '\(v)' is not one of: exit, restart") }
                onReset = p
            case "--poll-us":
                let v = try value("--poll-us")
                guard let n = Int(v), n >= 0, n <= VMConfig.maxPollMicroseconds else {
                    throw Failure(message: "--poll-us: '\(v)' is not a number of microseconds from 0 to \(VMConfig.maxPollMicroseconds)")
                }
                pollMicroseconds = n
            case let other:
                throw Failure(message: "\(other): unknown option")
            }
            i += 1
        }
        if !jail, jailMemoryMiB != nil { throw Failure(message: "--jail-memory-mib: only with --jail") }
        if let restoreDir {
            do { restore = try SnapshotImage(directory: restoreDir, forceDisks: forceDisks) } catch {
                throw Failure(message: "--restore \(restoreDir): \(error)")
            }
            config = restore!.snapshot.definition
            if let source {
                // The daemon's clone: its definition names the VM and brings its net backends
                // (taps handed over as fds); the machine itself must be the snapshot's.
                let given: VMConfig
                do { given = try VMConfig(json: source.bytes) } catch { throw Failure(message: "\(source.name): \(error)") }
                guard given.memoryMiB == config.memoryMiB, given.cpus == config.cpus, given.disks == config.disks,
                      given.console == config.console, given.nets.count == config.nets.count else {
                    throw Failure(message: "--restore \(restoreDir): the definition given differs from the snapshot's (memory, vCPUs, disks, console or net count)")
                }
                config.name = given.name
                config.nets = given.nets
            }
            if !nets.isEmpty { config.nets = try Self.cloneNets(nets, saved: config.nets) }
            return
        }
        if forceDisks || !nets.isEmpty { throw Failure(message: "\(forceDisks ? "--force-disks" : "--net"): only with --restore") }
        guard let source else { throw Failure(message: "no VM definition: give --config FILE, --config-fd N or --restore DIR") }
        do { config = try VMConfig(json: source.bytes) } catch {
            throw Failure(message: flagNames ? error.flagDescription : "\(source.name): \(error)")
        }
        if let pollMicroseconds { config.pollMicroseconds = pollMicroseconds }
    }

    /// `--net SPEC` per saved net device, in order: a clone's own backend (a tap, an fd,
    /// passt); without `mac=` it keeps the snapshot's address (the guest already uses it).
    static func cloneNets(_ specs: [String], saved: [NetConfig]) throws(Failure) -> [NetConfig] {
        guard specs.count == saved.count else {
            throw Failure(message: "--net: given \(specs.count) times, the snapshot has \(saved.count) net devices (one --net each, in order)")
        }
        var out: [NetConfig] = []
        for (spec, old) in zip(specs, saved) {
            var n: NetConfig
            do { n = try NetConfig(argument: spec) } catch { throw Failure(message: "--net \(spec): \(error.message)") }
            if n.mac == nil { n.mac = old.mac }
            out.append(n)
        }
        return out
    }

    static func read(path: String) throws(Failure) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw Failure(message: "\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        return try read(fd: fd, name: path)
    }

    static func read(fd: Int32, name: String) throws(Failure) -> [UInt8] {
        do { return try readAll(fd, limit: VMConfig.maxDefinitionBytes) } catch {
            throw Failure(message: "\(name): \(error.description)\(error.isTooLarge ? ": not a VM definition" : "")")
        }
    }
}
