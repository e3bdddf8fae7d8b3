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

    public init(kernel: String, cmdline: String = "", memoryMiB: Int = 128, cpus: Int = 1) {
        self.kernel = kernel
        self.cmdline = cmdline
        self.memoryMiB = memoryMiB
        self.cpus = cpus
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
        if cmdline.utf8.count > Self.maxCmdlineBytes {
            throw .invalidConfig(field: "cmdline", message: "\(cmdline.utf8.count) bytes is too long (at most \(Self.maxCmdlineBytes))")
        }
        if cmdline.utf8.contains(0) {
            throw .invalidConfig(field: "cmdline", message: "contains a NUL byte")
        }
    }
}

extension VMConfig {
    /// The config as `pvmm-vmm` arguments: how `pvmm run` (and later the daemon) hands a
    /// VM definition to its VMM process without pulling a JSON codec into that process.
    public var arguments: [String] {
        ["--kernel", kernel, "--cmdline", cmdline, "--memory", String(memoryMiB), "--cpus", String(cpus)]
    }

    /// Parses `arguments`. Every error names the flag.
    public init(arguments: [String]) throws(VMMError) {
        var kernel: String?
        var cmdline = "", memory = 128, cpus = 1
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
            case let other: throw .invalidConfig(field: String(other.drop { $0 == "-" }), message: "unknown option")
            }
            i += 1
        }
        guard let kernel else { throw .invalidConfig(field: "kernel", message: "missing") }
        self.init(kernel: kernel, cmdline: cmdline, memoryMiB: memory, cpus: cpus)
    }
}
