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
import Synchronization
import SystemPackage

/// Which KVM this is: this host's pagetable-based PVM, or hardware-assisted KVM.
public enum HostFlavour: String, Sendable {
    case pvm
    case hardware
}

/// One virtual machine: KVM objects, guest RAM, devices and vCPU threads. Lifecycle
/// (start, pause, resume, stop, wait) lives here so the CLI and the API are thin.
///
/// `@unchecked Sendable`: the KVM fds and memory are immutable after init; mutable
/// lifecycle state is behind `lifecycle` (a Mutex); the threads list is written only by
/// `start` before any other thread can see it.
public final class VM: @unchecked Sendable {
    public let config: VMConfig
    public let flavour: HostFlavour
    public let kernel: LoadedKernel
    public let stats: VMStats
    public let memory: GuestMemory

    let system: KVMSystem
    let vm: VirtualMachine
    let vcpus: [VCPUContext]
    let serial: Serial8250
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

    struct Lifecycle {
        var started = false
        var paused = false
        var stopping = false
        var exit: VMExit?
        var parked = 0
    }
    let lifecycle = Mutex(Lifecycle())

    /// Builds the VM: validates `config`, opens KVM, maps RAM, loads the kernel and sets up
    /// every vCPU. Nothing runs until `start()`.
    public init(config: VMConfig, console: any ByteSink) throws(VMMError) {
        self.config = config
        let system: KVMSystem
        do { system = try KVMSystem() } catch {
            throw .kvmUnavailable(message: Self.explainKVMOpen(error))
        }
        try config.validateForHost(hostMemoryMiB: Self.hostMemoryMiB(), hostMaxVCPUs: system.maxVCPUs)
        let image = try Self.readKernel(config.kernel, limit: UInt64(config.memoryMiB) << 20)
        let disks = try Self.openDisks(config.disks)
        let nets = try Self.openNets(config.nets)
        netChannels = nets

        let vm: VirtualMachine
        do { vm = try system.createVM() } catch { throw .kvm(error) }
        do { memory = try GuestMemory(size: UInt64(config.memoryMiB) << 20,
                                      holeStart: BootLayout.mmioHoleStart, holeEnd: BootLayout.mmioHoleEnd) }
        catch { throw .memory(error) }
        do {
            // The IOAPIC and LAPICs live in the kernel: interrupts, timers, HLT and
            // INIT/SIPI never need a userspace exit. They must exist before the vCPUs.
            for (slot, r) in memory.regions.enumerated() {
                try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: r.guestBase, size: r.size, hostAddress: r.hostAddress)
            }
            try vm.createIRQChip()
        } catch { throw .kvm(error) }

        let cmdline = Array(config.kernelCommandLine.utf8)
        let acpi = ACPITables(cpus: config.cpus)
        let booted = image.withUnsafeBytes { [memory] bytes in
            Result { () throws(BootError) in
                try acpi.write(to: memory)
                return try BootBuilder.prepare(kernel: bytes, mem: memory, cmdline: cmdline, rsdp: acpi.rsdp)
            }
        }
        let cpuState: InitialCPUState
        switch booted {
        case .success(let b): (kernel, cpuState) = b
        case .failure(let e): throw .badKernel(path: config.kernel, error: e)
        }

        wake = try EventFD()
        serial = Serial8250(sink: console, irq: IRQLine(vm: vm.handle, irq: Self.com1IRQ))
        (virtioDevices, virtioConsole) = try Self.makeVirtioDevices(config: config, disks: disks, nets: nets, console: console,
                                                                    memory: memory, vm: vm)
        stats = VMStats(devices: virtioDevices.map(\.device.stats))
        irqProbe = config.irqProbe ? try IRQProbe(memory: memory, vm: vm) : nil
        do {
            bus = try PortBus([
                .init(base: LegacyPorts.com1, length: 8, device: serial),
                .init(base: SysCtl.port, length: 4, device: SystemControl()),
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
                // Application processors wait in the in-kernel LAPIC for INIT/SIPI from
                // the guest (the standard way, so the guest boots the same under QEMU).
                if id == 0 {
                    flavour = try Self.probeFlavour(vcpu)
                    try Self.setInitialState(vcpu, cpuState)
                    if flavour == .pvm && kernel.entryKind == .pvmm64 {
                        // Register the VIF page before the first KVM_RUN so the guest never
                        // runs emulated (host-kvm.md: "How a vCPU goes native").
                        let value = BootLayout.vif | PVM.vifModeValid | PVM.vifPublishCR2
                        guard try vcpu.setMSR(PVM.msrVIF, value) else {
                            throw KVMError("register VIF page", .invalidArgument)
                        }
                    }
                }
                contexts.append(VCPUContext(vcpu: vcpu))
            }
        } catch { throw .kvm(error) }
        self.flavour = flavour
        self.system = system
        self.vm = vm
        self.vcpus = contexts
    }

    // MARK: Lifecycle

    /// Starts one named thread per vCPU.
    public func start() throws(VMMError) {
        let already = lifecycle.withLock { l in
            defer { l.started = true }
            return l.started
        }
        if already { return }
        // Device threads first: a guest may notify a queue as soon as it runs.
        for loop in virtioDevices.map(\.loop) + (irqProbe.map { [$0.loop] } ?? []) {
            do { try loop.start() } catch {
                finish(.failed("\(error)"))
                throw error
            }
        }
        VCPUKicker.installSignalHandler()
        for ctx in vcpus {
            ctx.vm = self
            let box = Unmanaged.passRetained(ctx).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let ctx = Unmanaged<VCPUContext>.fromOpaque(arg!).takeRetainedValue()
                ctx.threadMain()
                return nil
            }, box)
            if rc != 0 {
                Unmanaged<VCPUContext>.fromOpaque(box).release()
                finish(.failed("pthread_create: \(Errno(rawValue: rc))"))
                throw .thread("could not start vCPU \(ctx.vcpu.id) thread: \(Errno(rawValue: rc))")
            }
            ctx.thread = tid
        }
    }

    /// Blocks until every vCPU thread has ended, then stops the device threads; returns
    /// how the VM ended.
    public func wait() -> VMExit {
        for ctx in vcpus {
            if let t = ctx.thread {
                pthread_join(t, nil)
                ctx.thread = nil
            }
        }
        for d in virtioDevices { d.loop.stop() }
        // passt would also get SIGTERM when this process ends (PR_SET_PDEATHSIG); end it
        // now so it is gone when wait() returns.
        for case let p as PasstChannel in netChannels { p.terminate() }
        irqProbe?.loop.stop()
        return lifecycle.withLock { $0.exit } ?? .stopped
    }

    /// Asks the VM to stop; `wait()` then returns `.stopped` unless the guest ended first.
    public func stop() { finish(.stopped) }

    /// Parks every vCPU outside KVM_RUN and returns once all are parked.
    public func pause() {
        let running = lifecycle.withLock { l -> Bool in
            guard l.started, !l.stopping, !l.paused else { return false }
            l.paused = true
            return true
        }
        guard running else { return }
        kickAll()
        // vCPUs park within one kick (~20 us); bound the wait anyway.
        for _ in 0..<2000 {
            if lifecycle.withLock({ $0.parked == vcpus.count || $0.stopping }) { break }
            usleep(500)
        }
        // The guest's clock keeps following the host's (no jump back, no lost time on
        // resume); KVMCLOCK_CTRL marks the pause so its watchdogs don't fire.
        for ctx in vcpus { ctx.vcpu.notifyClockPaused() }
    }

    public func resume() {
        lifecycle.withLock { $0.paused = false }
        wake.signal()
    }

    public var isPaused: Bool { lifecycle.withLock { $0.paused } }

    /// Feeds console input to the guest; returns how many bytes were taken (the rest
    /// should be offered again: the device buffer is full, nothing is dropped). Input goes
    /// to virtio-console once its driver has set DRIVER_OK with receiveq ready, else to
    /// the 8250 (early boot, `--console serial`, or after a virtio-console reset).
    public func sendConsoleInput(_ bytes: UnsafeRawBufferPointer) -> Int {
        if let con = virtioConsole, con.receiveReady { return con.receive(bytes) }
        let n = serial.receive(bytes)
        if n > 0 { wake.signal() }
        return n
    }

    /// Records the first reason the VM ends and kicks every vCPU out.
    func finish(_ exit: VMExit) {
        let first = lifecycle.withLock { l -> Bool in
            guard l.exit == nil else { return false }
            l.exit = exit
            l.stopping = true
            return true
        }
        if first { kickAll() }
    }

    func kickAll() {
        for ctx in vcpus {
            if let t = ctx.thread { ctx.kicker.kick(thread: t) }
        }
        wake.signal()
    }

    // MARK: Building blocks

    /// COM1's ISA interrupt, an IOAPIC input with KVM's in-kernel irqchip.
    static let com1IRQ: UInt32 = 4

    /// PVM accepts the VIF MSR; hardware KVM refuses it. Writing 0 registers nothing.
    static func probeFlavour(_ vcpu: borrowing VCPU) throws(KVMError) -> HostFlavour {
        if let sig = try vcpu.msr(PVM.msrSignature), sig == PVM.signature { return .pvm }
        return try vcpu.setMSR(PVM.msrVIF, 0) ? .pvm : .hardware
    }

    static func readKernel(_ path: String, limit: UInt64) throws(VMMError) -> [UInt8] {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) }
        catch { throw .kernelUnreadable(path: path, message: "\(error)") }
        defer { try? fd.close() }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw .kernelUnreadable(path: path, message: "\(Errno(rawValue: errno))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .kernelUnreadable(path: path, message: "not a regular file") }
        guard UInt64(st.st_size) <= limit else {
            throw .kernelUnreadable(path: path, message: "\(st.st_size) bytes is larger than guest RAM")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var off = 0
        while off < bytes.count {
            let n: Int
            do { n = try bytes.withUnsafeMutableBytes { try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[off...])) } }
            catch { throw .kernelUnreadable(path: path, message: "\(error)") }
            if n == 0 { break }
            off += n
        }
        return Array(bytes[..<off])
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
