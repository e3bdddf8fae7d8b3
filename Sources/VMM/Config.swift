/// The definition of one VM: what `pvmm run` flags build, what a config file and the API
/// will carry as JSON. Plain values only, so it encodes the same everywhere.
public struct VMConfig: Codable, Sendable, Equatable {
    /// Path of the guest kernel (an ELF64 with a PVH or PVMM entry note).
    public var kernel: String
    /// Kernel command line handed to the guest in the start info.
    public var cmdline: String
    /// Guest RAM in MiB.
    public var memoryMiB: Int
    /// Number of vCPUs.
    public var cpus: Int
    /// virtio-blk disks, in order: disk i is `blk<i>` (docs/devices.md).
    public var disks: [DiskConfig]
    /// The console after boot: virtio-console (default) or only the 8250.
    public var console: ConsoleKind

    /// Benchmark aid: add the interrupt-latency probe device (IRQProbe).
    public var irqProbe: Bool

    public init(kernel: String, cmdline: String = "", memoryMiB: Int = 128, cpus: Int = 1,
                disks: [DiskConfig] = [], console: ConsoleKind = .virtio, irqProbe: Bool = false) {
        self.irqProbe = irqProbe
        self.kernel = kernel
        self.cmdline = cmdline
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.disks = disks
        self.console = console
    }

    enum CodingKeys: String, CodingKey { case kernel, cmdline, memoryMiB, cpus, disks, console, irqProbe }

    /// Fields added later are optional in JSON, with the same defaults as `init`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kernel = try c.decode(String.self, forKey: .kernel)
        cmdline = try c.decodeIfPresent(String.self, forKey: .cmdline) ?? ""
        memoryMiB = try c.decodeIfPresent(Int.self, forKey: .memoryMiB) ?? 128
        cpus = try c.decodeIfPresent(Int.self, forKey: .cpus) ?? 1
        disks = try c.decodeIfPresent([DiskConfig].self, forKey: .disks) ?? []
        console = try c.decodeIfPresent(ConsoleKind.self, forKey: .console) ?? .virtio
        irqProbe = try c.decodeIfPresent(Bool.self, forKey: .irqProbe) ?? false
    }

    public static let minMemoryMiB = 8
    /// The 64-bit entry's identity map covers 64 GiB (BootLayout.maxPageDirectories).
    public static let maxMemoryMiB = 60 * 1024
    public static let maxCmdlineBytes = 4095

    /// Checks every field against what this host can do; the error names the field.
    public func validate(hostMemoryMiB: Int, hostMaxVCPUs: Int) throws(VMMError) {
        if memoryMiB < Self.minMemoryMiB {
            throw .invalidConfig(field: "memory", message: "\(memoryMiB) MiB is too small: a VM needs at least \(Self.minMemoryMiB) MiB")
        }
        let limit = min(Self.maxMemoryMiB, hostMemoryMiB)
        if memoryMiB > limit {
            let why = hostMemoryMiB < Self.maxMemoryMiB ? "this host has \(hostMemoryMiB) MiB of RAM" : "pvmm supports at most \(Self.maxMemoryMiB) MiB"
            throw .invalidConfig(field: "memory", message: "\(memoryMiB) MiB is too large: \(why)")
        }
        if cpus < 1 || cpus > hostMaxVCPUs {
            throw .invalidConfig(field: "cpus", message: "\(cpus) is out of range: KVM on this host allows 1 to \(hostMaxVCPUs) vCPUs")
        }
        if cmdline.utf8.contains(0) {
            throw .invalidConfig(field: "cmdline", message: "contains a NUL byte")
        }
        if disks.count > VirtioLayout.maxDisks {
            throw .invalidConfig(field: "disk", message: "\(disks.count) disks is too many (at most \(VirtioLayout.maxDisks): one interrupt line each)")
        }
        for (i, d) in disks.enumerated() {
            try d.validate()
            if disks[..<i].contains(where: { $0.path == d.path }) {
                throw .invalidConfig(field: "disk", message: "\(d.path) is given twice")
            }
        }
        let full = kernelCommandLine.utf8.count
        if full > Self.maxCmdlineBytes {
            let devices = full == cmdline.utf8.count ? "" : " with the device entries pvmm appends"
            throw .invalidConfig(field: "cmdline", message: "\(full) bytes\(devices) is too long (at most \(Self.maxCmdlineBytes))")
        }
    }

    /// The command line the guest gets: the user's, then one `virtio_mmio.device=` entry
    /// per virtio device (the form Linux's virtio-mmio driver parses; docs/devices.md).
    public var kernelCommandLine: String {
        let entries = VirtioLayout.slots(for: self).map { VirtioLayout.cmdlineEntry(slot: $0.slot) }
            + (irqProbe ? [IRQProbe.cmdlineEntry] : [])
        return ([cmdline].filter { !$0.isEmpty } + entries).joined(separator: " ")
    }
}

extension VMConfig {
    /// The config as `pvmm-vmm` arguments: how `pvmm run` (and later the daemon) hands a
    /// VM definition to its VMM process without pulling a JSON codec into that process.
    public var arguments: [String] {
        ["--kernel", kernel, "--cmdline", cmdline, "--memory", String(memoryMiB), "--cpus", String(cpus)]
            + disks.flatMap { ["--disk", $0.argument] } + ["--console", console.rawValue]
            + (irqProbe ? ["--irq-probe"] : [])
    }

    /// Parses `arguments`. Every error names the flag.
    public init(arguments: [String]) throws(VMMError) {
        var kernel: String?
        var cmdline = "", memory = 128, cpus = 1
        var disks: [DiskConfig] = [], console = ConsoleKind.virtio, irqProbe = false
        var i = 0
        func value(_ flag: String) throws(VMMError) -> String {
            guard i + 1 < arguments.count else { throw .invalidConfig(field: flag, message: "missing value") }
            i += 1
            return arguments[i]
        }
        func number(_ flag: String) throws(VMMError) -> Int {
            let v = try value(flag)
            guard let n = Int(v) else { throw .invalidConfig(field: flag, message: "'\(v)' is not a number") }
            return n
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--kernel": kernel = try value("kernel")
            case "--cmdline": cmdline = try value("cmdline")
            case "--memory": memory = try number("memory")
            case "--cpus": cpus = try number("cpus")
            case "--disk": disks.append(try DiskConfig(argument: try value("disk")))
            case "--console": console = try ConsoleKind(argument: try value("console"))
            case "--irq-probe": irqProbe = true
            case let other: throw .invalidConfig(field: String(other.drop { $0 == "-" }), message: "unknown option")
            }
            i += 1
        }
        guard let kernel else { throw .invalidConfig(field: "kernel", message: "missing") }
        self.init(kernel: kernel, cmdline: cmdline, memoryMiB: memory, cpus: cpus, disks: disks, console: console,
                  irqProbe: irqProbe)
    }
}

/// One virtio-blk disk backed by a raw image file (or block device).
public struct DiskConfig: Codable, Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    /// The serial the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes); also names
    /// the device in log lines. Nil: no serial, logs say `blk<i>`.
    public var id: String?

    public init(path: String, readOnly: Bool = false, id: String? = nil) {
        self.path = path
        self.readOnly = readOnly
        self.id = id
    }

    /// Parses the `--disk` syntax: `PATH[,readonly][,id=NAME]`. Errors name `--disk`.
    public init(argument: String) throws(VMMError) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else {
            throw .invalidConfig(field: "disk", message: "'\(argument)': expected PATH[,readonly][,id=NAME]")
        }
        var readOnly = false
        var id: String?
        for option in parts.dropFirst() {
            if option == "readonly" || option == "ro" {
                readOnly = true
            } else if option.hasPrefix("id=") {
                id = String(option.dropFirst(3))
            } else {
                throw .invalidConfig(field: "disk", message: "'\(option)' in '\(argument)' is not an option (expected readonly or id=NAME)")
            }
        }
        self.init(path: path, readOnly: readOnly, id: id)
        try validate()
    }

    /// The `--disk` value that parses back to this config.
    public var argument: String {
        ([path] + (readOnly ? ["readonly"] : []) + (id.map { ["id=\($0)"] } ?? [])).joined(separator: ",")
    }

    public static let maxIDBytes = 20

    /// Syntax-level checks (the file itself is checked when the VM opens it).
    public func validate() throws(VMMError) {
        if path.isEmpty { throw .invalidConfig(field: "disk", message: "empty path") }
        if path.utf8.contains(0) { throw .invalidConfig(field: "disk", message: "path contains a NUL byte") }
        // The flag syntax has no escape for commas; a config must survive `arguments`.
        if path.contains(",") { throw .invalidConfig(field: "disk", message: "'\(path)': paths with commas are not supported") }
        if let id {
            guard !id.isEmpty, id.utf8.count <= Self.maxIDBytes,
                  id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") }) else {
                throw .invalidConfig(field: "disk", message: "id '\(id)': 1 to \(Self.maxIDBytes) printable ASCII characters, no spaces or commas")
            }
        }
    }
}

/// Which device carries the console once the guest's driver is up.
public enum ConsoleKind: String, Codable, Sendable, CaseIterable {
    /// Only the 8250 UART (one exit per byte).
    case serial
    /// A virtio-console device too; input moves to it once its driver is ready.
    case virtio

    public init(argument: String) throws(VMMError) {
        guard let k = ConsoleKind(rawValue: argument) else {
            throw .invalidConfig(field: "console", message: "'\(argument)' is not one of: serial, virtio")
        }
        self = k
    }
}
