import CKVM
import KVM
import Virtio
import VMDefinition

/// Everything of a paused VM except its RAM (which is the `memory` file next to the
/// state file): the decoded form of the sections in docs/snapshot.md.
public struct VMSnapshot: Sendable {
    /// One virtio-mmio device: its slot (docs/devices.md), device ID, registers and cursors.
    public struct VirtioDevice: Sendable, Equatable {
        public var slot: Int
        public var deviceType: UInt32
        public var transport: MMIOTransportState
        public init(slot: Int, deviceType: UInt32, transport: MMIOTransportState) {
            self.slot = slot
            self.deviceType = deviceType
            self.transport = transport
        }
    }

    /// Which file a disk was, and its size and modification time, after the flush.
    public struct DiskIdentity: Sendable, Equatable {
        public var device: UInt64
        public var inode: UInt64
        public var size: UInt64
        public var mtimeSeconds: Int64
        public var mtimeNanoseconds: Int64
        public init(device: UInt64, inode: UInt64, size: UInt64, mtimeSeconds: Int64, mtimeNanoseconds: Int64) {
            self.device = device
            self.inode = inode
            self.size = size
            self.mtimeSeconds = mtimeSeconds
            self.mtimeNanoseconds = mtimeNanoseconds
        }
    }

    public var flavour: SnapshotFlavour
    public var definition: VMConfig
    public var memorySize: UInt64
    public var vcpus: [VCPUState]
    /// The bytes of a `struct ckvm_irqchips` (PIC master, slave, IOAPIC).
    public var irqchips: [UInt8]
    /// KVM_GET_CLOCK's clock (ns) and the host wall clock at that instant (0 if unknown).
    public var clockNs: UInt64
    public var clockRealtimeNs: UInt64
    /// The 8250's registers (Serial8250.savedRegisters) and SysCtl's pending events.
    public var serial: [UInt8]
    public var sysctlEvents: UInt32
    public var virtio: [VirtioDevice]
    public var disks: [DiskIdentity]
    /// The console ring's content (what `logs` replays) and its total byte count.
    public var consoleLog: [UInt8]
    public var consoleEnd: UInt64

    public init(flavour: SnapshotFlavour, definition: VMConfig, memorySize: UInt64, vcpus: [VCPUState],
                irqchips: [UInt8], clockNs: UInt64, clockRealtimeNs: UInt64, serial: [UInt8], sysctlEvents: UInt32,
                virtio: [VirtioDevice], disks: [DiskIdentity], consoleLog: [UInt8], consoleEnd: UInt64) {
        self.flavour = flavour
        self.definition = definition
        self.memorySize = memorySize
        self.vcpus = vcpus
        self.irqchips = irqchips
        self.clockNs = clockNs
        self.clockRealtimeNs = clockRealtimeNs
        self.serial = serial
        self.sysctlEvents = sysctlEvents
        self.virtio = virtio
        self.disks = disks
        self.consoleLog = consoleLog
        self.consoleEnd = consoleEnd
    }

    // MARK: Section tags

    static let defn = SectionTag("DEFN"), mach = SectionTag("MACH"), vcpu = SectionTag("VCPU")
    static let irqc = SectionTag("IRQC"), clck = SectionTag("CLCK"), legacy = SectionTag("LEGA")
    static let virt = SectionTag("VIRT"), disk = SectionTag("DISK"), cons = SectionTag("CONS")

    static let knownTags: Set<SectionTag> = [defn, mach, vcpu, irqc, clck, legacy, virt, disk, cons]

    public static let serialRegisterBytes = 8
    /// Bounds for lists read from a file: more is not a pvmm VM.
    static let maxMSRs = 256
    static let maxQueues = 64
    static let maxConsoleBytes = 16 << 20

    // MARK: Encoding

    public func encoded() -> [UInt8] {
        var c = SnapshotContainer(flavour: flavour)
        c.append(Self.defn, definition.jsonBytes)
        var m = ByteWriter()
        m.u64(memorySize)
        m.u32(UInt32(vcpus.count))
        c.append(Self.mach, m.bytes)
        for (i, v) in vcpus.enumerated() {
            var w = ByteWriter()
            w.u32(UInt32(i))
            w.raw(v.regs)
            w.raw(v.sregs)
            w.blob(v.extra)
            w.blob(v.xstate)
            w.u32(v.mpState)
            // (index, value) of the MSRs KVM knew: a reader with another index list
            // still reads them by index.
            let known = zip(VCPUState.msrIndices, v.msrs).compactMap { i, m in m.map { (i, $0) } }
            w.u32(UInt32(known.count))
            for (index, value) in known { w.u32(index); w.u64(value) }
            c.append(Self.vcpu, w.bytes)
        }
        var q = ByteWriter()
        q.blob(irqchips)
        c.append(Self.irqc, q.bytes)
        var k = ByteWriter()
        k.u64(clockNs)
        k.u64(clockRealtimeNs)
        c.append(Self.clck, k.bytes)
        var l = ByteWriter()
        l.blob(serial)
        l.u32(sysctlEvents)
        c.append(Self.legacy, l.bytes)
        for d in virtio {
            var w = ByteWriter()
            w.u32(UInt32(d.slot))
            w.u32(d.deviceType)
            let t = d.transport
            w.u32(t.status); w.u64(t.driverFeatures); w.bool(t.driverSetUnknownBits)
            w.u32(t.deviceFeaturesSel); w.u32(t.driverFeaturesSel); w.u32(t.queueSel)
            w.u32(t.interruptStatus); w.u32(t.configGeneration)
            w.u32(UInt32(t.queues.count))
            for qu in t.queues {
                w.u32(qu.size); w.bool(qu.ready); w.u64(qu.desc); w.u64(qu.driver); w.u64(qu.device)
                w.bool(qu.cursors != nil)
                let cu = qu.cursors ?? SplitQueue.Cursors(nextAvail: 0, nextUsed: 0, signalledUsed: 0)
                w.u16(cu.nextAvail); w.u16(cu.nextUsed); w.u16(cu.signalledUsed)
            }
            c.append(Self.virt, w.bytes)
        }
        for (i, d) in disks.enumerated() {
            var w = ByteWriter()
            w.u32(UInt32(i))
            w.u64(d.device); w.u64(d.inode); w.u64(d.size)
            w.u64(UInt64(bitPattern: d.mtimeSeconds)); w.u64(UInt64(bitPattern: d.mtimeNanoseconds))
            c.append(Self.disk, w.bytes)
        }
        var o = ByteWriter()
        o.u64(consoleEnd)
        o.blob(consoleLog)
        c.append(Self.cons, o.bytes)
        return c.encoded()
    }

    // MARK: Decoding

    /// Parses a state file and checks every field that does not need the host: counts
    /// against the definition, the definition itself, lengths of KVM's structs, enum
    /// values. What only KVM can judge (register values) it judges at restore.
    public init(parsing bytes: [UInt8], host: SnapshotFlavour) throws(SnapshotError) {
        let c = try SnapshotContainer(parsing: bytes, host: host)
        // A tag this version does not know is a different format, or a corrupted tag.
        for (i, s) in c.sections.enumerated() where !Self.knownTags.contains(s.tag) {
            throw .malformed(field: "section \(i)", message: "unknown tag \(s.tag)")
        }
        flavour = c.flavour
        let defn = try c.one(Self.defn)
        do { definition = try VMConfig(json: defn) } catch { throw .malformed(field: "DEFN", message: "\(error)") }
        do { try definition.validate() } catch { throw .malformed(field: "DEFN.\(error.field)", message: error.message) }

        var m = ByteReader(try c.one(Self.mach), section: "MACH")
        memorySize = try m.u64("memory_size")
        let cpus = try m.u32("vcpus")
        try m.finish()
        guard memorySize == UInt64(definition.memoryMiB) << 20 else {
            throw .malformed(field: "MACH.memory_size", message: "\(memorySize) bytes, the definition says \(definition.memoryMiB) MiB")
        }
        guard cpus == UInt32(definition.cpus) else {
            throw .malformed(field: "MACH.vcpus", message: "\(cpus), the definition says \(definition.cpus)")
        }
        let vs = c.all(Self.vcpu)
        guard vs.count == definition.cpus else {
            throw .malformed(field: "VCPU", message: "\(vs.count) sections for \(definition.cpus) vCPUs")
        }
        var vcpus: [VCPUState] = []
        for (i, payload) in vs.enumerated() {
            var r = ByteReader(payload, section: "VCPU \(i)")
            guard try r.u32("index") == UInt32(i) else { throw .malformed(field: "VCPU \(i).index", message: "out of order") }
            let regs = try r.raw(kvm_regs(), "regs")
            let sregs = try r.raw(kvm_sregs(), "sregs")
            let extra = try r.exact("lapic/events/fpu", ckvm_vcpu_extra_size())
            let xstate = try r.exact("xsave/xcrs", ckvm_vcpu_xstate_size())
            // struct ckvm_vcpu_xstate ends with has_xsave, has_xcrs (u32 each).
            let flags = xstate.suffix(8)
            guard flags.enumerated().allSatisfy({ $0.offset % 4 == 0 ? $0.element <= 1 : $0.element == 0 }) else {
                throw .malformed(field: "VCPU \(i).xsave/xcrs", message: "presence flags are not 0 or 1")
            }
            let mp = try r.u32("mp_state")
            // KVM_MP_STATE_RUNNABLE .. KVM_MP_STATE_AP_RESET_HOLD (x86 uses 0-4).
            guard mp <= 4 else { throw .malformed(field: "VCPU \(i).mp_state", message: "\(mp) is not an x86 MP state") }
            let n = try r.u32("msr count")
            guard n <= UInt32(Self.maxMSRs) else { throw .malformed(field: "VCPU \(i).msrs", message: "\(n) entries") }
            var msrs = [UInt64?](repeating: nil, count: VCPUState.msrIndices.count)
            for _ in 0..<n {
                let index = try r.u32("msr index")
                guard let slot = VCPUState.msrIndices.firstIndex(of: index), msrs[slot] == nil else {
                    throw .malformed(field: "VCPU \(i).msrs", message: "MSR 0x\(String(index, radix: 16)) is not one pvmm saves, or twice")
                }
                msrs[slot] = try r.u64("msr value")
            }
            try r.finish()
            vcpus.append(VCPUState(regs: regs, sregs: sregs, extra: Array(extra), xstate: Array(xstate), mpState: mp, msrs: msrs))
        }
        self.vcpus = vcpus

        var q = ByteReader(try c.one(Self.irqc), section: "IRQC")
        irqchips = Array(try q.exact("irqchips", ckvm_irqchips_size()))
        try q.finish()
        // Three struct kvm_irqchip, each starting with its chip_id (u32).
        let chip = irqchips.count / 3
        for i in 0..<3 {
            let id = irqchips[(i * chip)..<(i * chip + 4)].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            guard id == UInt32(i) else { throw .malformed(field: "IRQC.chip[\(i)].chip_id", message: "\(id)") }
        }

        var k = ByteReader(try c.one(Self.clck), section: "CLCK")
        clockNs = try k.u64("clock")
        clockRealtimeNs = try k.u64("realtime")
        try k.finish()

        var l = ByteReader(try c.one(Self.legacy), section: "LEGA")
        serial = Array(try l.blob("serial", max: Self.serialRegisterBytes))
        guard serial.count == Self.serialRegisterBytes else {
            throw .malformed(field: "LEGA.serial", message: "\(serial.count) bytes, \(Self.serialRegisterBytes) expected")
        }
        sysctlEvents = try l.u32("sysctl events")
        try l.finish()

        var virtio: [VirtioDevice] = []
        for (i, payload) in c.all(Self.virt).enumerated() {
            var r = ByteReader(payload, section: "VIRT \(i)")
            let slot = try r.u32("slot")
            guard slot < 64 else { throw .malformed(field: "VIRT \(i).slot", message: "\(slot) is not a device slot") }
            let type = try r.u32("device_type")
            var t = MMIOTransportState()
            t.status = try r.u32("status"); t.driverFeatures = try r.u64("driver_features")
            t.driverSetUnknownBits = try r.bool("unknown_feature_bits")
            t.deviceFeaturesSel = try r.u32("device_features_sel"); t.driverFeaturesSel = try r.u32("driver_features_sel")
            t.queueSel = try r.u32("queue_sel"); t.interruptStatus = try r.u32("interrupt_status")
            t.configGeneration = try r.u32("config_generation")
            let n = try r.u32("queue count")
            guard n <= UInt32(Self.maxQueues) else { throw .malformed(field: "VIRT \(i).queues", message: "\(n) queues") }
            for _ in 0..<n {
                let size = try r.u32("queue size"), ready = try r.bool("queue ready")
                let desc = try r.u64("queue desc"), driver = try r.u64("queue driver"), device = try r.u64("queue device")
                let has = try r.bool("queue has cursors")
                let cu = SplitQueue.Cursors(nextAvail: try r.u16("next_avail"), nextUsed: try r.u16("next_used"),
                                            signalledUsed: try r.u16("signalled_used"))
                t.queues.append(.init(size: size, ready: ready, desc: desc, driver: driver, device: device, cursors: has ? cu : nil))
            }
            try r.finish()
            virtio.append(VirtioDevice(slot: Int(slot), deviceType: type, transport: t))
        }
        self.virtio = virtio

        let ds = c.all(Self.disk)
        guard ds.count == definition.disks.count else {
            throw .malformed(field: "DISK", message: "\(ds.count) sections for \(definition.disks.count) disks")
        }
        var disks: [DiskIdentity] = []
        for (i, payload) in ds.enumerated() {
            var r = ByteReader(payload, section: "DISK \(i)")
            guard try r.u32("index") == UInt32(i) else { throw .malformed(field: "DISK \(i).index", message: "out of order") }
            disks.append(DiskIdentity(device: try r.u64("dev"), inode: try r.u64("inode"), size: try r.u64("size"),
                                      mtimeSeconds: Int64(bitPattern: try r.u64("mtime_s")),
                                      mtimeNanoseconds: Int64(bitPattern: try r.u64("mtime_ns"))))
            try r.finish()
        }
        self.disks = disks

        var o = ByteReader(try c.one(Self.cons), section: "CONS")
        consoleEnd = try o.u64("end")
        consoleLog = Array(try o.blob("ring", max: Self.maxConsoleBytes))
        try o.finish()
        guard UInt64(consoleLog.count) <= consoleEnd else {
            throw .malformed(field: "CONS.end", message: "\(consoleEnd) is less than the ring's \(consoleLog.count) bytes")
        }
    }
}
