#if canImport(Glibc)
import Glibc
#endif
import Devices
import Sandbox
import VMM

/// `pvmm run`'s flags as plain values (the `Run` command declares them for
/// ArgumentParser, with these defaults), and what they do: build the definition and exec
/// pvmm-vmm. `pvmm create` takes the same flags.
struct RunFlags {
    static let defaults = RunFlags()

    var kernel: String? = nil
    var initrd: String? = nil
    var cmdline = ""
    var memory = "128"
    var cpus = 1
    var disk: [String] = []
    var net: [String] = []
    var console = ConsoleKind.virtio.rawValue
    var config: String? = nil
    var pollUs: Int? = nil
    var restore: String? = nil
    var forceDisks = false
    var irqProbe = false
    var seccomp = SeccompMode.kill.rawValue
    var jail = false
    var uid: UInt32? = nil
    var gid: UInt32? = nil

    var jailArguments: [String] {
        guard jail else { return [] }
        return ["--jail"] + (uid.map { ["--uid", String($0)] } ?? []) + (gid.map { ["--gid", String($0)] } ?? [])
    }

    func run() throws -> Never {
        if !jail, let flag = [uid.map { _ in "--uid" }, gid.map { _ in "--gid" }].compactMap({ $0 }).first {
            throw UsageError(message: "\(flag): only with --jail")
        }
        guard SeccompMode(rawValue: seccomp) != nil else {
            throw UsageError(message: "--seccomp: '\(seccomp)' is not one of: kill, log, off")
        }
        if let restore {
            // --net is allowed (below); --poll-us is neither refused nor passed on.
            let flags = definitionFlags(except: ["--net", "--poll-us"])
            if let f = flags.first { throw UsageError(message: "\(f): not allowed with --restore (the snapshot defines the VM)") }
            // --net gives a clone its own backend (and MAC): one per saved net device.
            try Executables.exec(Executables.sibling("pvmm-vmm"),
                                 ["--restore", restore, "--seccomp", seccomp] + (forceDisks ? ["--force-disks"] : [])
                                    + net.flatMap { ["--net", $0] } + jailArguments)
        }
        if forceDisks { throw UsageError(message: "--force-disks: only with --restore") }
        let (definition, errorsAs) = try definition()
        // The VM runs in a lean process of its own (see Package.swift): replace this one,
        // handing it the definition as JSON on an inherited pipe.
        let fd = try Executables.pipe(definition.jsonBytes)
        try Executables.exec(Executables.sibling("pvmm-vmm"), ["--config-fd", String(fd), "--errors-as", errorsAs,
                                                                     "--seccomp", seccomp] + jailArguments)
    }

    /// The VM these flags (or --config) define, and how its errors should name fields;
    /// `pvmm create` takes the same flags.
    func definition() throws -> (VMConfig, errorsAs: String) {
        let definition: VMConfig
        var errorsAs = "flags"
        if let config {
            definition = try Self.load(config: config)
            errorsAs = "json"
            let flags = definitionFlags(except: ["--config"])
            if let f = flags.first { throw UsageError(message: "\(f): not allowed with --config (the file defines the whole VM)") }
        } else {
            do {
                definition = VMConfig(kernel: try kernel ?? Executables.bundledGuest(), initrd: initrd, cmdline: cmdline,
                                      memoryMiB: try VMConfig.memoryMiB(argument: memory), cpus: cpus,
                                      disks: try disk.map { spec throws(ConfigError) in try DiskConfig(argument: spec) },
                                      nets: try net.map { spec throws(ConfigError) in try NetConfig(argument: spec) },
                                      console: try ConsoleKind(argument: console), irqProbe: irqProbe, pollMicroseconds: pollUs)
            } catch let e as ConfigError {
                throw UsageError(message: e.flagDescription)
            }
        }
        return (definition, errorsAs)
    }

    /// The flags that define the VM which were given (differ from `defaults`), minus
    /// `excluded`, in the order an error names the first: --config and --restore refuse them.
    func definitionFlags(except excluded: Set<String>) -> [String] {
        let d = Self.defaults
        let given: [(flag: String, isGiven: Bool)] = [
            ("--kernel", kernel != nil), ("--initrd", initrd != nil), ("--cmdline", cmdline != d.cmdline),
            ("--memory", memory != d.memory), ("--cpus", cpus != d.cpus), ("--disk", !disk.isEmpty), ("--net", !net.isEmpty),
            ("--config", config != nil), ("--console", console != d.console), ("--irq-probe", irqProbe),
            ("--poll-us", pollUs != nil),
        ]
        return given.filter { $0.isGiven && !excluded.contains($0.flag) }.map(\.flag)
    }

    /// Reads and decodes a definition file; errors name the file and the field.
    static func load(config path: String) throws(UsageError) -> VMConfig {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw UsageError(message: "--config \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes: [UInt8]
        do { bytes = try readAll(fd, limit: VMConfig.maxDefinitionBytes) } catch {
            throw UsageError(message: "--config \(path): \(error.description)\(error.isTooLarge ? ": not a VM definition" : "")")
        }
        do {
            let c = try VMConfig(json: bytes)
            try c.validate()
            return c
        } catch {
            throw UsageError(message: "--config \(path): \(error)")
        }
    }
}

extension RunFlags {
    /// The fast path of `pvmm run` (PVMM.main): ArgumentParser's start-up in this static
    /// binary costs ~3 ms of CPU before the VM process even starts (type-metadata and
    /// protocol-conformance lookups while it builds the command tree and reflects on
    /// `Run`; measured with perf). Arguments that are all `Run` flags in a plain form
    /// (`--name value`, `--name=value`, a switch), each at most once (the repeatable
    /// --disk/--net any number of times), with numbers that parse, are taken here and
    /// run exactly as `Run.run` would. Anything else (`--help`, an unknown or repeated
    /// flag, a missing or dash-led value, a bad number) returns nil: ArgumentParser parses
    /// and reports it as always.
    init?(fastParsing arguments: ArraySlice<String>) {
        var i = arguments.startIndex
        var seen: Set<String> = []
        while i < arguments.endIndex {
            let argument = arguments[i]
            i += 1
            guard argument.hasPrefix("--") else { return nil }
            var name = argument
            var value: String?
            if let eq = argument.firstIndex(of: "=") {
                name = String(argument[..<eq])
                value = String(argument[argument.index(after: eq)...])
            }
            let repeatable = name == "--disk" || name == "--net"
            guard repeatable || seen.insert(name).inserted else { return nil }
            if Self.switches.contains(name) {
                guard value == nil else { return nil }
            } else if value == nil {
                guard i < arguments.endIndex, !arguments[i].hasPrefix("-") else { return nil }
                value = arguments[i]
                i += 1
            }
            guard let v = value else {
                switch name {
                case "--force-disks": forceDisks = true
                case "--irq-probe": irqProbe = true
                case "--jail": jail = true
                default: return nil
                }
                continue
            }
            guard !v.isEmpty else { return nil }
            switch name {
            case "--kernel": kernel = v
            case "--initrd": initrd = v
            case "--cmdline": cmdline = v
            case "--memory": memory = v
            case "--cpus": guard let n = Int(v) else { return nil }; cpus = n
            case "--disk": disk.append(v)
            case "--net": net.append(v)
            case "--console": console = v
            case "--config": config = v
            case "--poll-us": guard let n = Int(v) else { return nil }; pollUs = n
            case "--restore": restore = v
            case "--seccomp": seccomp = v
            case "--uid": guard let n = UInt32(v) else { return nil }; uid = n
            case "--gid": guard let n = UInt32(v) else { return nil }; gid = n
            default: return nil
            }
        }
    }

    static let switches: Set<String> = ["--force-disks", "--irq-probe", "--jail"]
}
