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
    /// Until the SMP issue lands, a VM has one vCPU.
    public static let supportedCPUs = 1

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
        if cpus > Self.supportedCPUs {
            throw .invalidConfig(field: "cpus", message: "\(cpus) vCPUs: SMP is not yet supported, use 1")
        }
        if cmdline.utf8.count > Self.maxCmdlineBytes {
            throw .invalidConfig(field: "cmdline", message: "\(cmdline.utf8.count) bytes is too long (at most \(Self.maxCmdlineBytes))")
        }
        if cmdline.utf8.contains(0) {
            throw .invalidConfig(field: "cmdline", message: "contains a NUL byte")
        }
    }
}
