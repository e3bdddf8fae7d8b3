@_exported import VMDefinition
@_exported import VMControl

/// What the VMM adds to a definition: the limits its device layout imposes, and the
/// command line the guest actually gets.
extension VMConfig {
    public static let maxCmdlineBytes = 4095

    /// Every check before a VM is built: the definition's own, the host's limits, then
    /// the device layout's. The error names the field.
    public func validateForHost(hostMemoryMiB: Int, hostMaxVCPUs: Int) throws(VMMError) {
        do { try validate(hostMemoryMiB: hostMemoryMiB, hostMaxVCPUs: hostMaxVCPUs) } catch { throw .invalidConfig(error) }
        if disks.count > VirtioLayout.maxDisks {
            throw .invalidConfig(ConfigError(field: "disks", message: "\(disks.count) disks is too many (at most \(VirtioLayout.maxDisks): one interrupt line each)"))
        }
        if nets.count > VirtioLayout.maxNets {
            throw .invalidConfig(ConfigError(field: "nets", message: "\(nets.count) nets is too many (at most \(VirtioLayout.maxNets): one interrupt line each)"))
        }
        let full = kernelCommandLine.utf8.count
        if full > Self.maxCmdlineBytes {
            // Say what the user may give: the limit less what pvmm appends.
            let user = cmdline.utf8.count
            let appended = full - user
            let why = appended == 0 ? "" : " (the guest takes \(Self.maxCmdlineBytes); pvmm appends \(appended) bytes of device entries)"
            throw .invalidConfig(ConfigError(field: "cmdline", message: "\(user) bytes is too long: at most \(Self.maxCmdlineBytes - appended)\(why)"))
        }
    }

    /// The command line the guest gets: the user's, then one `virtio_mmio.device=` entry
    /// per virtio device (the form Linux's virtio-mmio driver parses; docs/devices.md),
    /// then, if there are any, `pvmm_msi=` when `msiInterrupts` (their interrupts are
    /// MSIs: VirtioLayout) and `pvmm_poll_us=` (the device threads poll: drivers may too)
    /// unless polling is off.
    public func kernelCommandLine(msiInterrupts: Bool) -> String {
        let entries = VirtioLayout.slots(for: self).map { VirtioLayout.cmdlineEntry(slot: $0.slot) }
            + (irqProbe ? [IRQProbe.cmdlineEntry] : [])
        let poll = pollBudgetMicroseconds > 0 ? ["pvmm_poll_us=\(pollBudgetMicroseconds)"] : []
        let msi = msiInterrupts ? [VirtioLayout.msiCmdlineEntry] : []
        return ([cmdline].filter { !$0.isEmpty } + entries + (entries.isEmpty ? [] : msi + poll)).joined(separator: " ")
    }

    /// The longest command line the guest may get (with `pvmm_msi=`): what the limit checks.
    public var kernelCommandLine: String { kernelCommandLine(msiInterrupts: true) }
}
