#if canImport(Glibc)
import Glibc
#endif
import Boot
import CKVM
import Devices
import GuestMemory
import HostNet
import KVM
import PVMMABI
import Snapshot
import SystemPackage

/// Which KVM this is: this host's pagetable-based PVM, or hardware-assisted KVM.
public enum HostFlavour: String, Sendable {
    case pvm
    case hardware
}

/// What a guest reset (i8042 0xFE, a KVM reset event) does.
public enum ResetPolicy: String, Sendable {
    /// The VM ends, status 0 (`pvmm run`'s default).
    case exit
    /// The VM reboots in the same process (the daemon passes `--on-reset restart`).
    case restart
}

/// One virtual machine: KVM objects, guest RAM, devices and vCPU threads.
///
/// Three steps, each its own file: `init` makes the machine (KVM, RAM, irqchip,
/// devices, vCPUs: this file); `boot` loads the kernel, ACPI tables and boot registers
/// into it, again for every reboot (VMBoot.swift); the lifecycle (start, pause, resume,
/// stop, kill, reboot, wait) runs it (VMLifecycle.swift). A snapshot restore will
/// replace `boot` on the same machine.
///
/// `@unchecked Sendable`: the KVM fds, memory and devices are immutable after init;
/// lifecycle state is behind `lifecycle` (a Monitor), lifecycle operations behind `operation`.
public final class VM: @unchecked Sendable {
    public let config: VMConfig
    /// The definition a snapshot records, when `config`'s paths are not the host's (a
    /// jailed VMM sees /kernel and /diskN; a restore must find the real files). Set
    /// before `start`.
    public var snapshotDefinition: VMConfig?
    public let flavour: HostFlavour
    public let stats: VMStats
    public let memory: GuestMemory
    public let resetPolicy: ResetPolicy
    /// Where the console output goes (the ring, for `pvmm-vmm`; any sink for tests).
    public let console: any ByteSink

    let system: KVMSystem
    let vm: VirtualMachine
    let vcpus: [VCPUContext]
    let serial: Serial8250
    let sysctl: SystemControl
    let bus: PortBus
    let mmioBus: MMIOBus
    let wake: EventFD
    /// virtio devices in slot order, each with its own thread (VirtioDevices.swift).
    let virtioDevices: [VirtioDeviceRunner]
    let irqProbe: IRQProbe?
    /// The net backends, so passt processes pvmm started end when the VM does.
    let netChannels: [any FrameChannel]
    /// Takes console input once its driver is ready (nil with `--console serial`).
    let virtioConsole: VirtioConsoleBackend?
    /// The in-kernel PIC/IOAPIC as created: a reboot puts it back.
    let powerOnIRQChips: [UInt8]
    /// The open disk images, in `config.disks` order (a snapshot flushes and records them).
    let disks: [DiskImage]

    /// The scratch eventfd of `settleIOBus`.
    let ioBusScratch: EventFD
    /// Where that scratch ioeventfd lives for an instant: the first page of the MMIO hole,
    /// below the virtio devices (VirtioLayout.base), where nothing else is.
    static let ioBusScratchAddress: UInt64 = BootLayout.mmioHoleStart

    /// Makes KVM finish freeing the I/O buses its ioeventfd registrations replaced
    /// (VMHandle.settleIOBus), so that the VM's exit does not wait for them. pvmm-vmm's
    /// supervisor calls it once the vCPUs run: it blocks for a grace period (~1-4 ms),
    /// off the way to the guest's first instruction and to its first answer.
    public func settleIOBus() {
        try? vm.handle.settleIOBus(eventFD: ioBusScratch.fd, scratch: Self.ioBusScratchAddress)
    }

    /// The kernel of the current boot (nil until `boot`).
    public internal(set) var kernel: LoadedKernel?
    /// The kernel and initrd files as read by the first boot. A reboot loads these bytes
    /// again rather than the files: a running VMM opens no new paths (its seccomp filter
    /// refuses openat, docs/security.md), and the VM reboots into what it was started with.
    var kernelImage: BootImage?
    var initrdImage: BootImage?
    /// Virtio interrupts are MSIs (`pvmm_msi=` on the command line): the kernel has the
    /// PVMM entry. Otherwise KVM's default routes, through the IOAPIC.
    let interruptsAsMSI: Bool

    let lifecycle = Monitor()
    /// Guarded by `lifecycle`.
    var life: LifecycleState
    /// Held for the whole of pause, resume, reboot and the final teardown, so they do not
    /// interleave. vCPU and device threads never take it.
    let operation = Monitor()
    /// Guarded by `operation`.
    var operationBusy = false
    /// Told about every state change, with the lifecycle lock held: it must only queue.
    let observer: (@Sendable (VMStateEvent) -> Void)?

    /// Makes the machine: validates `config`, opens KVM, maps RAM, creates the irqchip,
    /// the devices and every vCPU; then boots it (a bad kernel is a usage error now), or
    /// with `restore` puts a snapshot's state on it instead (VMSnapshot.swift: RAM mapped
    /// copy-on-write from the image, disks checked against the snapshot first).
    /// Nothing runs until `start()`.
    /// `log` takes what devices report while the VM runs (from vCPU and device threads,
    /// so it must not block: pvmm-vmm passes the console hub's log ring).
    /// `nets`: the net backends already open (`openNets`), one per `config.nets` entry.
    public init(config: VMConfig, console: any ByteSink, resetPolicy: ResetPolicy = .exit,
                observer: (@Sendable (VMStateEvent) -> Void)? = nil,
                log: @escaping @Sendable (String) -> Void = writeStderrLine,
                restore: SnapshotImage? = nil, nets preopened: [any FrameChannel]? = nil) throws(VMMError) {
        self.config = config
        self.console = console
        self.resetPolicy = resetPolicy
        self.observer = observer
        let system: KVMSystem
        do { system = try KVMSystem() } catch {
            throw .kvmUnavailable(message: Self.explainKVMOpen(error))
        }
        try config.validateForHost(hostMemoryMiB: Self.hostMemoryMiB(), hostMaxVCPUs: system.maxVCPUs)
        if let restore { try restore.checkDisks(config.disks) }
        let disks = try Self.openDisks(config.disks)
        self.disks = disks
        // The jail opens them before it enters its namespaces (VM.openNets).
        let nets: [any FrameChannel]
        if let preopened { nets = preopened } else { nets = try Self.openNets(config.nets) }
        netChannels = nets

        // The kernel's entry decides how virtio interrupts arrive (VirtioLayout, "Delivery"):
        // a pvmm-aware kernel (the PVMM entry) takes them as MSIs, a standard PVH kernel
        // (Linux) through the IOAPIC pins it programs itself. A kernel whose notes do not
        // parse gets its error from `boot`, as before.
        let image = try Self.readKernel(config.kernel, limit: UInt64(config.memoryMiB) << 20)
        kernelImage = image
        interruptsAsMSI = image.withBytes { (b) -> EntryKind? in try? ELFLoader.entry(of: b) } != .pvh32

        let vm: VirtualMachine
        do { vm = try system.createVM() } catch { throw .kvm(error) }
        do { memory = try GuestMemory(size: UInt64(config.memoryMiB) << 20,
                                      holeStart: BootLayout.mmioHoleStart, holeEnd: BootLayout.mmioHoleEnd,
                                      file: restore?.memoryFD) }
        catch { throw .memory(error) }
        do {
            // The IOAPIC and LAPICs live in the kernel: interrupts, timers, HLT and
            // INIT/SIPI never need a userspace exit. They must exist before the vCPUs.
            for (slot, r) in memory.regions.enumerated() {
                try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: r.guestBase, size: r.size, hostAddress: r.hostAddress)
            }
            try vm.createIRQChip()
            // Before any irqfd is bound (VirtioLayout, "Delivery").
            if interruptsAsMSI { try vm.setGSIRouting(GSIRoute.table(replacing: VirtioLayout.msiRoutes)) }
            powerOnIRQChips = try vm.irqChipState()
        } catch { throw .kvm(error) }

        wake = try EventFD()
        ioBusScratch = try EventFD()
        serial = Serial8250(sink: console, irq: IRQLine(vm: vm.handle, irq: Self.com1IRQ))
        sysctl = SystemControl(memory: memory, irq: IRQLine(vm: vm.handle, irq: UInt32(SysCtl.eventIRQ)))
        (virtioDevices, virtioConsole) = try Self.makeVirtioDevices(config: config, disks: disks, nets: nets, console: console,
                                                                    memory: memory, vm: vm, log: log)
        stats = VMStats(devices: virtioDevices.map(\.device.stats))
        irqProbe = config.irqProbe ? try IRQProbe(memory: memory, vm: vm) : nil
        do {
            bus = try PortBus([
                .init(base: LegacyPorts.com1, length: 8, device: serial),
                .init(base: SysCtl.port, length: SysCtl.length, device: sysctl),
                .init(base: 0x60, length: 5, device: I8042()),
            ])
            mmioBus = try MMIOBus(virtioDevices.map(\.mapping) + (irqProbe.map { [$0.mapping] } ?? []))
        } catch { throw .thread("device buses: \(error)") }

        var contexts: [VCPUContext] = []
        var flavour = HostFlavour.hardware
        let syncRegs = system.capability(KVM_CAP_SYNC_REGS) != 0
        do throws(KVMError) {
            let cpuid = try system.supportedCPUID()
            for id in 0..<config.cpus {
                let vcpu = try vm.createVCPU(id: id)
                try vcpu.setCPUID(cpuid)
                if syncRegs { vcpu.enableSyncRegisters() }
                if id == 0 { flavour = try Self.probeFlavour(vcpu) }
                // Application processors wait in the in-kernel LAPIC for INIT/SIPI from
                // the guest (the standard way, so the guest boots the same under QEMU);
                // this state is what every reboot puts back.
                let powerOn = try vcpu.saveState()
                contexts.append(VCPUContext(vcpu: vcpu, index: id, powerOn: powerOn))
            }
        } catch { throw .kvm(error) }
        self.flavour = flavour
        self.system = system
        self.vm = vm
        self.vcpus = contexts
        life = LifecycleState(vcpus: config.cpus)
        for ctx in contexts { ctx.vm = self }
        // The first boot is prepared here so a kernel that cannot boot is a usage error
        // before anything runs; reboots call `boot` again. A restore replaces the boot.
        if let restore {
            try apply(restore.snapshot)
            // A reboot boots the kernel (read above), and by then no file may be opened
            // (seccomp): read the initrd now, as a first boot would have.
            initrdImage = try Self.readInitrd(config.initrd, limit: UInt64(config.memoryMiB) << 20)
        } else {
            try boot()
        }
    }

    /// Feeds console input to the guest; returns how many bytes were taken (the rest
    /// should be offered again: the device buffer is full, nothing is dropped). Input goes
    /// to virtio-console once its driver has set DRIVER_OK with receiveq ready, else to
    /// the 8250 (early boot, `--console serial`, or after a virtio-console reset).
    public func sendConsoleInput(_ bytes: UnsafeRawBufferPointer) -> Int {
        if let con = virtioConsole, con.receiveReady { return con.receive(bytes) }
        // The 8250 raises IRQ 4 itself; a halted vCPU wakes in the kernel.
        return serial.receive(bytes)
    }

    /// Every device thread (virtio devices, the IRQ probe).
    var deviceLoops: [EventLoop] {
        var loops: [EventLoop] = []
        for d in virtioDevices { loops.append(d.loop) }
        if let p = irqProbe { loops.append(p.loop) }
        return loops
    }

    // MARK: Building blocks

    /// COM1's ISA interrupt, an IOAPIC input with KVM's in-kernel irqchip.
    static let com1IRQ: UInt32 = 4

    /// PVM accepts the VIF MSR; hardware KVM refuses it. Writing 0 registers nothing.
    static func probeFlavour(_ vcpu: borrowing VCPU) throws(KVMError) -> HostFlavour {
        if let sig = try vcpu.msr(PVM.msrSignature), sig == PVM.signature { return .pvm }
        return try vcpu.setMSR(PVM.msrVIF, 0) ? .pvm : .hardware
    }

    /// The kernel, read for every boot (at most guest RAM).
    static func readKernel(_ path: String, limit: UInt64) throws(VMMError) -> BootImage {
        do { return try BootImage(path: path, limit: limit, what: "guest RAM") }
        catch { throw .kernelUnreadable(path: path, message: error.message) }
    }

    /// The initrd, read for every boot; errors name the `initrd` field (`--initrd`). Whether
    /// it fits next to the kernel is known once the kernel is loaded (`boot`).
    static func readInitrd(_ path: String?, limit: UInt64) throws(VMMError) -> BootImage? {
        guard let path else { return nil }
        let image: BootImage
        do { image = try BootImage(path: path, limit: limit, what: "guest RAM") }
        catch { throw .invalidConfig(ConfigError(field: "initrd", message: "\(path): \(error.message)")) }
        guard image.count > 0 else { throw .invalidConfig(ConfigError(field: "initrd", message: "\(path) is empty")) }
        return image
    }

    static func explainKVMOpen(_ e: KVMError) -> String {
        switch e.errno {
        case .noSuchFileOrDirectory: "/dev/kvm does not exist: this host has no KVM (load kvm or kvm_pvm)"
        case .permissionDenied, .notPermitted: "/dev/kvm: permission denied (run as root or join the kvm group)"
        default: "/dev/kvm: \(e)"
        }
    }

    static func hostMemoryMiB() -> Int {
        (Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))) >> 20
    }
}
