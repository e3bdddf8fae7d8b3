/// The definition of one VM. One JSON codec (below) serves `pvmm run --config FILE`, the
/// daemon's API bodies and state files, and the hand-off to the VMM process; `pvmm run`
/// flags build the same value. Plain values only; no dependencies.
public struct VMConfig: Sendable, Equatable {
    /// The VM's name in the daemon (`[a-z0-9][a-z0-9-]{0,62}`); nil for `pvmm run`.
    public var name: String?
    /// Path of the guest kernel (an ELF64 with a PVH or PVMM entry note).
    public var kernel: String
    /// Path of an initrd (initramfs) loaded into guest RAM and announced as PVH module 0
    /// (docs/boot.md); nil for none.
    public var initrd: String?
    /// Kernel command line handed to the guest in the start info.
    public var cmdline: String
    /// Guest RAM in MiB.
    public var memoryMiB: Int
    /// Number of vCPUs.
    public var cpus: Int
    /// virtio-blk disks, in order: disk i is `blk<i>` (docs/devices.md).
    public var disks: [DiskConfig]
    /// virtio-net devices, in order: net i is `net<i>`.
    public var nets: [NetConfig]
    /// The console after boot: virtio-console (default) or only the 8250.
    public var console: ConsoleKind
    /// Benchmark aid: add the interrupt-latency probe device (IRQProbe).
    public var irqProbe: Bool
    /// Adaptive polling budget of the device threads in microseconds (`poll_us`): after a
    /// batch a device keeps watching its rings for up to this long before it sleeps on its
    /// ioeventfd (docs/devices.md, "Polling"). 0 turns polling off; nil takes the default.
    public var pollMicroseconds: Int?

    public static let defaultPollMicroseconds = 50
    public static let maxPollMicroseconds = 1000
    /// The budget in effect.
    public var pollBudgetMicroseconds: Int { pollMicroseconds ?? Self.defaultPollMicroseconds }

    public init(name: String? = nil, kernel: String, initrd: String? = nil, cmdline: String = "", memoryMiB: Int = 128, cpus: Int = 1,
                disks: [DiskConfig] = [], nets: [NetConfig] = [], console: ConsoleKind = .virtio, irqProbe: Bool = false,
                pollMicroseconds: Int? = nil) {
        self.name = name
        self.kernel = kernel
        self.initrd = initrd
        self.cmdline = cmdline
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.disks = disks
        self.nets = nets
        self.console = console
        self.irqProbe = irqProbe
        self.pollMicroseconds = pollMicroseconds
    }

    public static let minMemoryMiB = 8
    /// The 64-bit entry's identity map covers 64 GiB (BootLayout.maxPageDirectories).
    public static let maxMemoryMiB = 60 * 1024
    public static let maxNameBytes = 63
    /// A definition is small; a file larger than this is not one.
    public static let maxDefinitionBytes = 1 << 20

    /// Checks every field that does not depend on the host; the error names the field.
    /// Host limits (RAM, vCPUs) and the device layout are checked by the VMM.
    public func validate() throws(ConfigError) {
        if let name { try Self.validate(name: name) }
        if kernel.isEmpty { throw ConfigError(field: "kernel", message: "empty path") }
        if kernel.utf8.contains(0) { throw ConfigError(field: "kernel", message: "path contains a NUL byte") }
        if let initrd, initrd.isEmpty { throw ConfigError(field: "initrd", message: "empty path") }
        if let initrd, initrd.utf8.contains(0) { throw ConfigError(field: "initrd", message: "path contains a NUL byte") }
        if memoryMiB < Self.minMemoryMiB {
            throw ConfigError(field: "memory_mib", message: "\(memoryMiB) MiB is too small: a VM needs at least \(Self.minMemoryMiB) MiB")
        }
        if memoryMiB > Self.maxMemoryMiB {
            throw ConfigError(field: "memory_mib", message: "\(memoryMiB) MiB is too large: pvmm supports at most \(Self.maxMemoryMiB) MiB")
        }
        if cpus < 1 { throw ConfigError(field: "cpus", message: "\(cpus) is out of range: a VM needs at least 1 vCPU") }
        if cmdline.utf8.contains(0) { throw ConfigError(field: "cmdline", message: "contains a NUL byte") }
        for (i, d) in disks.enumerated() {
            try d.validate(field: "disks[\(i)]")
            if disks[..<i].contains(where: { $0.path == d.path }) {
                throw ConfigError(field: "disks[\(i)].path", message: "\(d.path) is given twice")
            }
        }
        for (i, n) in nets.enumerated() { try n.validate(field: "nets[\(i)]") }
        if let p = pollMicroseconds, p < 0 || p > Self.maxPollMicroseconds {
            throw ConfigError(field: "poll_us", message: "\(p) is out of range: 0 (off) to \(Self.maxPollMicroseconds) microseconds")
        }
    }

    /// Checks the host-dependent limits: RAM the host has and vCPUs KVM allows.
    public func validate(hostMemoryMiB: Int, hostMaxVCPUs: Int) throws(ConfigError) {
        try validate()
        if memoryMiB > hostMemoryMiB {
            throw ConfigError(field: "memory_mib", message: "\(memoryMiB) MiB is too large: this host has \(hostMemoryMiB) MiB of RAM")
        }
        if cpus > hostMaxVCPUs {
            throw ConfigError(field: "cpus", message: "\(cpus) is out of range: KVM on this host allows 1 to \(hostMaxVCPUs) vCPUs")
        }
    }

    /// `[a-z0-9][a-z0-9-]{0,62}`: usable as a file name, a host name and a URL segment.
    public static func validate(name: String) throws(ConfigError) {
        let b = Array(name.utf8)
        func ok(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) }
        guard let first = b.first, ok(first), b.count <= maxNameBytes, b.allSatisfy({ ok($0) || $0 == UInt8(ascii: "-") }) else {
            throw ConfigError(field: "name", message: "'\(name)' is not a valid name: 1 to \(maxNameBytes) of a-z, 0-9 and '-', starting with a letter or digit")
        }
    }
}

// MARK: JSON

extension VMConfig {
    /// Decodes a definition; every error names the field (`disks[1].readonly`). Unknown
    /// fields are refused. Optional fields take the same defaults as `init`.
    public init(json value: JSONValue) throws(ConfigError) {
        var r = try FieldReader(value)
        let name = try r.string("name")
        let kernel = try r.required("kernel") { (r, k) throws(ConfigError) in try r.string(k) }
        let initrd = try r.string("initrd")
        let cmdline = try r.string("cmdline") ?? ""
        let memory = try r.int("memory_mib") ?? 128
        let cpus = try r.int("cpus") ?? 1
        var disks: [DiskConfig] = []
        for (i, d) in (try r.array("disks") ?? []).enumerated() { disks.append(try DiskConfig(json: d, path: "disks[\(i)]")) }
        var nets: [NetConfig] = []
        for (i, n) in (try r.array("nets") ?? []).enumerated() { nets.append(try NetConfig(json: n, path: "nets[\(i)]")) }
        var console = ConsoleKind.virtio
        if let c = try r.string("console") {
            guard let k = ConsoleKind(rawValue: c) else {
                throw ConfigError(field: "console", message: "'\(c)' is not one of: serial, virtio")
            }
            console = k
        }
        let irqProbe = try r.bool("irq_probe") ?? false
        let poll = try r.int("poll_us")
        try r.finish()
        self.init(name: name, kernel: kernel, initrd: initrd, cmdline: cmdline, memoryMiB: memory, cpus: cpus, disks: disks, nets: nets,
                  console: console, irqProbe: irqProbe, pollMicroseconds: poll)
    }

    /// Parses and decodes JSON text; a syntax error is reported with its byte offset.
    public init(json bytes: some Collection<UInt8>) throws(ConfigError) {
        let value: JSONValue
        do { value = try JSONValue(parsing: bytes) } catch { throw ConfigError(field: "", message: error.description) }
        try self.init(json: value)
    }

    /// Every field, defaults included (a state file says exactly what the VM is).
    public var json: JSONValue {
        var m: [(key: String, value: JSONValue)] = []
        if let name { m.append(("name", .string(name))) }
        m += [
            ("kernel", .string(kernel)),
        ]
        if let initrd { m.append(("initrd", .string(initrd))) }
        m += [
            ("cmdline", .string(cmdline)),
            ("memory_mib", .int(memoryMiB)),
            ("cpus", .int(cpus)),
            ("disks", .array(disks.map(\.json))),
            ("nets", .array(nets.map(\.json))),
            ("console", .string(console.rawValue)),
            ("irq_probe", .bool(irqProbe)),
        ]
        if let pollMicroseconds { m.append(("poll_us", .int(pollMicroseconds))) }
        return .object(m)
    }

    public var jsonBytes: [UInt8] { json.encodedBytes }
    public var jsonString: String { json.encoded }
}

/// Which device carries the console once the guest's driver is up.
public enum ConsoleKind: String, Sendable, CaseIterable {
    /// Only the 8250 UART (one exit per byte).
    case serial
    /// A virtio-console device too; input moves to it once its driver is ready.
    case virtio

    public init(argument: String) throws(ConfigError) {
        guard let k = ConsoleKind(rawValue: argument) else {
            throw ConfigError(field: "console", message: "'\(argument)' is not one of: serial, virtio")
        }
        self = k
    }
}
