#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import HostNet
import KVM
import Virtio

/// Where the virtio-mmio devices live and which interrupt each one raises
/// (docs/devices.md, "Slots"). Guest-visible and fixed: a device kind always sits in its
/// own range of slots, so a slot's address and GSI never depend on which other devices
/// exist, and kinds added later (vsock, rng, balloon) already have theirs.
///
/// | slots | kind | GSIs |
/// |---|---|---|
/// | 0 | console | 5 |
/// | 1-8 | disks blk0-blk7 | 6-13 |
/// | 9-12 | nets net0-net3 | 14-17 |
/// | 13, 14, 15 | vsock, rng, balloon (reserved) | 18, 19, 20 |
/// | 16, 17 | spare | 21, 22 |
///
/// GSI 23, the IOAPIC's last pin, is the IRQ probe's. `gsi(slot:)` is the one place the
/// interrupt is chosen.
///
/// Delivery: every GSI from 5 to 23 is routed as an MSI (`msiRoutes`), not through the
/// IOAPIC: KVM injects an MSI straight from the irqfd's wake-up, an IOAPIC input from a
/// kernel work item (~10 us later on this host). The vector is the one pvos' IOAPIC path
/// gives the same GSI (`msiVectorBase` + GSI, to the BSP), and the command line says so
/// (`pvmm_msi=0x30`): pvos then skips programming the IOAPIC for them. Under QEMU, with no
/// such entry, pvos routes the same interrupts through the IOAPIC.
public enum VirtioLayout {
    /// Inside the MMIO hole below 4 GiB (BootLayout.mmioHoleStart = 0xC000_0000), far
    /// from the IOAPIC (0xFEC0_0000) and LAPIC (0xFEE0_0000).
    public static let base: UInt64 = 0xD000_0000
    /// One 4 KiB window per device: registers at 0x000-0x0FF, config space from 0x100.
    public static let windowSize: UInt64 = 0x1000
    /// GSIs 5, 6, 7...: above COM1's 4, up to 22 (23 is the IRQ probe's).
    public static let firstGSI: UInt32 = 5
    public static let slotCount = 18
    public static let consoleSlot = 0
    public static let firstDiskSlot = 1
    public static let maxDisks = 8
    public static let firstNetSlot = 9
    public static let maxNets = 4
    /// Reserved for devices to come; nothing sits there yet.
    public static let vsockSlot = 13
    public static let rngSlot = 14
    public static let balloonSlot = 15

    /// MSI vector of GSI g: `msiVectorBase` + g, to APIC 0 (pvos' Vector.ioapicBase).
    public static let msiVectorBase: UInt8 = 0x30
    /// The last GSI routed as an MSI (the IRQ probe's).
    public static let lastMSIGSI: UInt32 = 23

    /// The routes that replace the IOAPIC pins of GSIs 5-23 (the table KVM gets is
    /// `GSIRoute.table(replacing: msiRoutes)`).
    public static var msiRoutes: [GSIRoute] {
        (firstGSI...lastMSIGSI).map { .msi(gsi: $0, vector: msiVectorBase + UInt8($0), apic: 0) }
    }

    /// `pvmm_msi=0x30`: GSIs 5-23 arrive as vector 0x30 + GSI at the BSP, with no IOAPIC.
    public static var msiCmdlineEntry: String { "pvmm_msi=0x\(String(msiVectorBase, radix: 16))" }

    public static func address(slot: Int) -> UInt64 { base + UInt64(slot) * windowSize }
    public static func gsi(slot: Int) -> UInt32 { firstGSI + UInt32(slot) }

    /// `virtio_mmio.device=4K@0xd0000000:5`: size, base and interrupt, as Linux's
    /// virtio_mmio module parameter (and QEMU microvm with acpi=off) spell it.
    public static func cmdlineEntry(slot: Int) -> String {
        "virtio_mmio.device=4K@0x\(String(address(slot: slot), radix: 16)):\(gsi(slot: slot))"
    }

    public enum Kind: Sendable, Equatable {
        case console
        case disk(Int)
        case net(Int)
    }

    public struct Slot: Sendable, Equatable {
        public let slot: Int
        public let kind: Kind
    }

    /// The virtio devices `config` gets, in slot order.
    public static func slots(for config: VMConfig) -> [Slot] {
        (config.console == .virtio ? [Slot(slot: consoleSlot, kind: .console)] : [])
            + config.disks.indices.map { Slot(slot: firstDiskSlot + $0, kind: .disk($0)) }
            + config.nets.indices.map { Slot(slot: firstNetSlot + $0, kind: .net($0)) }
    }
}

extension EventFD: Notifier {}

extension EventFD {
    /// Reads and clears the counter without blocking: the number of signals since the
    /// last drain (0 if none).
    func drain() -> UInt64 {
        var v: UInt64 = 0
        return Glibc.read(fd, &v, 8) == 8 ? v : 0
    }
}

/// One virtio device as the VM runs it: the MMIO device, its eventfds and its thread.
///
/// Notification path: the guest writes QueueNotify -> KVM signals that queue's eventfd
/// (ioeventfd with datamatch = queue index, no exit to userspace) -> the device's
/// EventLoop thread drains the ring. Interrupt path: the device thread sets
/// InterruptStatus, then writes the irqfd, which KVM turns into an edge on the GSI.
final class VirtioDeviceRunner {
    let slot: Int
    let device: any VirtioDeviceControl
    let loop: EventLoop
    /// Owned here: KVM holds registrations on them until the VM fd closes.
    let events: [EventFD]

    private init(slot: Int, device: any VirtioDeviceControl, loop: EventLoop, events: [EventFD]) {
        self.slot = slot
        self.device = device
        self.loop = loop
        self.events = events
    }

    /// Creates the eventfds, registers irqfd and ioeventfds with KVM and the handlers
    /// with a new (not yet started) EventLoop named `thread`.
    static func make<Model: VirtioBackedModel>(slot: Int, thread: String, logName: String, stats: DeviceStats,
                                               model: Model, service: EventFD, memory: GuestMemory,
                                               vm: borrowing VirtualMachine, pollMicroseconds: Int,
                                               log: @escaping @Sendable (String) -> Void) throws(VMMError) -> VirtioDeviceRunner {
        var queueEvents: [EventFD] = []
        for _ in model.queueMaxSizes { queueEvents.append(try EventFD()) }
        let irq = try EventFD()
        do { try vm.registerIRQFD(irq.fd, gsi: VirtioLayout.gsi(slot: slot)) } catch { throw .kvm(error) }
        let notify = VirtioLayout.address(slot: slot) + MMIORegister.queueNotify
        for (q, e) in queueEvents.enumerated() {
            // If KVM refuses, the write exits to the vCPU loop instead, and the
            // transport's .notify signals the same eventfd: slower, same behaviour.
            do { try vm.registerIOEventFD(e.fd, mmio: notify, length: 4, datamatch: UInt64(q)) } catch {
                writeStderrLine("pvmm: \(logName): no ioeventfd for queue \(q) (\(error)): its notifications will exit to the VMM")
            }
        }
        let device = VirtioMMIODevice(model: model, memory: memory, name: logName, stats: stats,
                                      interrupt: irq, queueNotifiers: queueEvents, service: service, log: log)
        let loop = try EventLoop(name: thread)
        if pollMicroseconds > 0 { loop.poller = Poller(maxMicroseconds: pollMicroseconds) { device.poll($0) } }
        if let host = model.backend.hostFDBackend {
            // Not watched until the device has something to do with it (rx buffers posted,
            // a transmit held back): the backend sets the interest from its thread.
            host.attach(loop)
            try loop.add(host.hostFD, events: []) { events in device.hostEvent(events) }
        }
        for (q, e) in queueEvents.enumerated() {
            try loop.add(e.fd) {
                let n = e.drain()
                if n > 0 { device.queueNotified(q, count: n) }
            }
        }
        try loop.add(service.fd) {
            if service.drain() > 0 { device.serviceRequested() }
        }
        return VirtioDeviceRunner(slot: slot, device: device, loop: loop, events: queueEvents + [irq, service])
    }

    var mapping: MMIOBus.Mapping {
        MMIOBus.Mapping(base: VirtioLayout.address(slot: slot), length: VirtioLayout.windowSize, device: device)
    }
}

extension VM {
    /// Opens every disk image before anything else is built, so a missing, unreadable or
    /// locked image is a usage error (exit 2) naming --disk.
    /// Opens every disk; refuses one file given twice under different names (before
    /// opening it: its second lock would only say "locked by another process"), and warns
    /// about a tail the guest cannot reach.
    static func openDisks(_ disks: [DiskConfig], warn: (String) -> Void = writeStderrLine) throws(VMMError) -> [DiskImage] {
        var images: [DiskImage] = []
        for (i, d) in disks.enumerated() {
            if let id = FileIdentity(path: d.path), let j = images.firstIndex(where: { $0.identity == id }) {
                throw .invalidConfig(ConfigError(field: "disks[\(i)].path",
                                                 message: "\(d.path) is the same file as disk \(j) (\(disks[j].path)): a disk is given twice"))
            }
            let image: DiskImage
            do { image = try DiskImage.open(path: d.path, readOnly: d.readOnly) } catch {
                throw .invalidConfig(ConfigError(field: "disks[\(i)].path", message: error.message))
            }
            if image.unreachableTail != 0 {
                let sectors = image.size / DiskImage.sectorSize
                warn("pvmm: warning: disk \(d.path): \(image.size) bytes is not a multiple of 512: the guest sees \(sectors) sectors, the last \(image.unreachableTail) bytes are unreachable")
            }
            images.append(image)
        }
        return images
    }

    /// Opens every net backend (tap, inherited fd, passt) before the VM is built, so a
    /// missing tap, an fd that is not a tap or a silent passt socket is a usage error
    /// (exit 2) naming --net. pvmm starts passt itself when no socket is given; it ends
    /// with the VMM (PasstChannel).
    public static func openNets(_ nets: [NetConfig]) throws(VMMError) -> [any FrameChannel] {
        var channels: [any FrameChannel] = []
        for (i, n) in nets.enumerated() {
            do throws(HostNetError) {
                switch n.backend {
                case .tap(let name): channels.append(TapChannel(tap: try Tap.open(name: name)))
                case .fd(let fd): channels.append(TapChannel(tap: try Tap.adopt(fd: fd)))
                case .passt(let socket?): channels.append(try PasstChannel.connect(path: socket, mtu: passtMTU))
                case .passt(nil): channels.append(try PasstChannel.launch(mtu: passtMTU))
                }
            } catch {
                throw .network(field: "nets[\(i)]", error)
            }
        }
        return channels
    }

    /// The MTU pvmm gives passt (and the guest, in config space): an Ethernet MTU, so the
    /// guest's buffers stay small. passt's own default is 65520.
    static let passtMTU = 1500

    /// Builds the virtio devices of `config` (see VirtioLayout). Returns them in slot
    /// order and the console backend, for input routing.
    /// `log` takes the devices' DEVICE_NEEDS_RESET lines (vCPU and device threads: it must
    /// not block).
    static func makeVirtioDevices(config: VMConfig, disks: [DiskImage], nets: [any FrameChannel], console: any ByteSink,
                                  memory: GuestMemory, vm: borrowing VirtualMachine,
                                  log: @escaping @Sendable (String) -> Void) throws(VMMError) -> ([VirtioDeviceRunner], VirtioConsoleBackend?) {
        var runners: [VirtioDeviceRunner] = []
        var consoleBackend: VirtioConsoleBackend?
        let poll = config.pollBudgetMicroseconds
        for s in VirtioLayout.slots(for: config) {
            let service = try EventFD()
            switch s.kind {
            case .console:
                let backend = VirtioConsoleBackend(sink: console, service: service)
                consoleBackend = backend
                runners.append(try .make(slot: s.slot, thread: "pvmm-con0", logName: "virtio-console con0", stats: DeviceStats(name: "con0"),
                                         model: VirtioConsoleModel(backend: backend), service: service, memory: memory, vm: vm, pollMicroseconds: poll, log: log))
            case .disk(let i):
                let name = "blk\(i)"
                // io_uring completions wake the device thread through its service eventfd.
                let backend = VirtioBlockBackend(disk: disks[i], id: config.disks[i].id, completions: service.fd)
                runners.append(try .make(slot: s.slot, thread: "pvmm-\(name)", logName: "virtio-blk \(config.disks[i].id ?? name)",
                                         stats: DeviceStats(name: name), model: VirtioBlockModel(backend: backend),
                                         service: service, memory: memory, vm: vm, pollMicroseconds: poll, log: log))
            case .net(let i):
                let name = "net\(i)"
                let netStats = NetStats()
                let mac = config.nets[i].mac.map { MACBytes($0.array) } ?? MACBytes.generated(index: i)
                let backend = VirtioNetBackend(channel: nets[i], mac: mac, stats: netStats, service: service, name: name)
                runners.append(try .make(slot: s.slot, thread: "pvmm-\(name)", logName: "virtio-net \(name)",
                                         stats: DeviceStats(name: name, extra: netStats.named),
                                         model: VirtioNetModel(backend: backend), service: service, memory: memory, vm: vm, pollMicroseconds: poll, log: log))
            }
        }
        return (runners, consoleBackend)
    }
}
