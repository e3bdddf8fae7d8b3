// virtio-mmio transport (virtio 1.2 §4.2, version 2 only) and split virtqueues (§2.7)
// with EVENT_IDX. Every register access is an exit (~20 us on PVM); QueueNotify is an
// ioeventfd under pvmm (~7 us). So the hot path touches only the rings in RAM, notifies
// once per batch when avail_event asks for it, and the interrupt entry (assembly, so no
// Swift state to save) reads InterruptStatus and ACKs it; drivers then walk the used
// ring on the CPU that waits, which sleeps in Platform.idle meanwhile.

@_extern(c, "pvos_read16") func read16(_ address: UInt64) -> UInt16
@_extern(c, "pvos_write16") func write16(_ address: UInt64, _ value: UInt16)
@_extern(c, "pvos_mfence") func memoryFence()
@_extern(c, "pvos_xchg32") func exchange32(_ address: UInt64, _ value: UInt32) -> UInt32
@_extern(c, "pvos_virtio_irq_base_addr") func virtioIRQBaseTable() -> UInt64
@_extern(c, "pvos_virtio_irq_status_addr") func virtioIRQStatusTable() -> UInt64

enum VirtioReg {
    static let magic: UInt64 = 0x000, version: UInt64 = 0x004, deviceID: UInt64 = 0x008
    static let deviceFeatures: UInt64 = 0x010, deviceFeaturesSel: UInt64 = 0x014
    static let driverFeatures: UInt64 = 0x020, driverFeaturesSel: UInt64 = 0x024
    static let queueSel: UInt64 = 0x030, queueNumMax: UInt64 = 0x034, queueNum: UInt64 = 0x038
    static let queueReady: UInt64 = 0x044, queueNotify: UInt64 = 0x050
    static let interruptStatus: UInt64 = 0x060, interruptACK: UInt64 = 0x064, status: UInt64 = 0x070
    static let queueDesc: UInt64 = 0x080, queueDriver: UInt64 = 0x090, queueDevice: UInt64 = 0x0A0
    static let config: UInt64 = 0x100
    static let magicValue: UInt32 = 0x7472_6976   // "virt"
}

enum VirtioStatus {
    static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4
    static let featuresOK: UInt32 = 8, needsReset: UInt32 = 0x40, failed: UInt32 = 0x80
}

enum VirtioFeature {
    static let indirect: UInt64 = 1 << 28, eventIdx: UInt64 = 1 << 29, version1: UInt64 = 1 << 32
}

/// One virtio-mmio register window.
final class VirtioDevice {
    let base: UInt64
    let irq: Int            // GSI, or -1
    var features: UInt64 = 0
    var interrupts = false  // routed through the IOAPIC

    init(base: UInt64, irq: Int) { self.base = base; self.irq = irq }

    func reg(_ offset: UInt64) -> UInt32 { read32(base + offset) }
    func setReg(_ offset: UInt64, _ value: UInt32) { write32(base + offset, value) }
    var status: UInt32 { reg(VirtioReg.status) }
    var deviceID: UInt32 { reg(VirtioReg.deviceID) }
    func config32(_ offset: UInt64) -> UInt32 { read32(base + VirtioReg.config + offset) }

    /// Status = 0, and wait until the device reads back 0 (§4.2.3.1.1).
    func reset() {
        setReg(VirtioReg.status, 0)
        var n = 0
        while status != 0 && n < 1000 { cpuPause(); n += 1 }
        if interrupts { _ = exchange32(virtioIRQStatusTable() + UInt64(irq * 4), 0) }
    }

    /// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, negotiate (`wanted` & offered;
    /// VERSION_1 required), FEATURES_OK and check that it stuck.
    func begin(wanted: UInt64) -> Bool {
        reset()
        setReg(VirtioReg.status, VirtioStatus.acknowledge)
        setReg(VirtioReg.status, VirtioStatus.acknowledge | VirtioStatus.driver)
        setReg(VirtioReg.deviceFeaturesSel, 0)
        var offered = UInt64(reg(VirtioReg.deviceFeatures))
        setReg(VirtioReg.deviceFeaturesSel, 1)
        offered |= UInt64(reg(VirtioReg.deviceFeatures)) << 32
        features = offered & wanted
        guard features & VirtioFeature.version1 != 0 else { fail(); return false }
        setReg(VirtioReg.driverFeaturesSel, 0)
        setReg(VirtioReg.driverFeatures, UInt32(truncatingIfNeeded: features))
        setReg(VirtioReg.driverFeaturesSel, 1)
        setReg(VirtioReg.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        let s = VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK
        setReg(VirtioReg.status, s)
        guard status & VirtioStatus.featuresOK != 0 else { fail(); return false }
        return true
    }

    func fail() { setReg(VirtioReg.status, status | VirtioStatus.failed) }

    /// Sets queue `index` up with at most `maxSize` entries, reusing `q`'s memory when
    /// re-initialising after a reset. Nil if the device has no such queue.
    func setupQueue(_ index: UInt32, maxSize: Int, reuse q: Virtqueue?) -> Virtqueue? {
        setReg(VirtioReg.queueSel, index)
        let max = Int(reg(VirtioReg.queueNumMax))
        guard max > 0 else { return nil }
        var size = 1
        while size * 2 <= min(max, maxSize) { size *= 2 }
        let queue: Virtqueue
        if let q, q.size == size { queue = q; q.clear() } else {
            guard let n = Virtqueue(notify: base + VirtioReg.queueNotify, index: index, size: size) else { return nil }
            queue = n
        }
        queue.eventIdx = features & VirtioFeature.eventIdx != 0
        setReg(VirtioReg.queueNum, UInt32(size))
        for (r, a) in [(VirtioReg.queueDesc, queue.desc), (VirtioReg.queueDriver, queue.avail), (VirtioReg.queueDevice, queue.used)] {
            setReg(r, UInt32(truncatingIfNeeded: a))
            setReg(r + 4, UInt32(truncatingIfNeeded: a >> 32))
        }
        setReg(VirtioReg.queueReady, 1)
        return queue
    }

    /// DRIVER_OK, then route the GSI to the BSP (first time only) so that irq_entry ACKs.
    func driverOK() {
        setReg(VirtioReg.status, status | VirtioStatus.driverOK)
        if !interrupts && APIC.on && irq >= 0 && irq < Virtio.maxGSI {
            write64(virtioIRQBaseTable() + UInt64(irq * 8), base)
            interrupts = IOAPIC.routeDevice(UInt8(irq), to: APIC.bspID)
            if !interrupts { write64(virtioIRQBaseTable() + UInt64(irq * 8), 0) }
        }
    }

    /// Interrupt causes seen since the last call (bit 0 used buffer, bit 1 config).
    func takeInterrupts() -> UInt32 {
        interrupts ? exchange32(virtioIRQStatusTable() + UInt64(irq * 4), 0) : 0
    }

    var interruptPending: Bool { interrupts && read32(virtioIRQStatusTable() + UInt64(irq * 4)) != 0 }

    /// The device gave up on its queues (DEVICE_NEEDS_RESET or FAILED): one exit.
    var broken: Bool { status & (VirtioStatus.needsReset | VirtioStatus.failed) != 0 }
}

/// A split virtqueue: descriptor table, available and used rings in three pages. The free
/// list and chain lengths are kept in guest-private arrays, so nothing the device writes
/// can corrupt them; used entries are checked (id in range and in flight) before use.
final class Virtqueue {
    let notify: UInt64
    let index: UInt32
    let size: Int
    let desc: UInt64, avail: UInt64, used: UInt64
    var eventIdx = false
    var next: [UInt16]          // free-list / chain links
    var chainLength: [UInt16]   // 0: not in flight
    var freeHead = 0
    var numFree = 0
    var availIdx: UInt16 = 0    // our shadow of avail.idx
    var kickedIdx: UInt16 = 0   // avail.idx at the last notify decision
    var lastUsed: UInt16 = 0
    var corrupt = false         // the device returned something impossible

    init?(notify: UInt64, index: UInt32, size: Int) {
        let pages = Pages.allocate(3)
        guard pages != 0, size <= 256 else { return nil }
        self.notify = notify
        self.index = index
        self.size = size
        desc = pages
        avail = pages + pageSize
        used = pages + 2 * pageSize
        next = [UInt16](repeating: 0, count: size)
        chainLength = [UInt16](repeating: 0, count: size)
        clear()
    }

    /// Zeroed rings, every descriptor free.
    func clear() {
        for i in 0..<Int(3 * pageSize / 8) { write64(desc + UInt64(8 * i), 0) }
        for i in 0..<size { next[i] = UInt16((i + 1) % size); chainLength[i] = 0 }
        freeHead = 0
        numFree = size
        availIdx = 0
        kickedIdx = 0
        lastUsed = 0
        corrupt = false
    }

    var usedEventAddress: UInt64 { avail + 4 + 2 * UInt64(size) }
    var availEventAddress: UInt64 { used + 4 + 8 * UInt64(size) }
    /// The head the next `add` will use (drivers key per-request memory by it).
    var nextHead: Int { freeHead }

    /// Writes a chain of `count` descriptors (`segment(i)` = address, length, device
    /// writes) and queues it in the available ring (not yet visible to the device until
    /// `kick`). Returns the head, or nil if there is no room.
    func add(_ count: Int, _ segment: (Int) -> (UInt64, UInt32, Bool)) -> Int? {
        guard count > 0, count <= numFree, !corrupt else { return nil }
        let head = freeHead
        var i = head
        for k in 0..<count {
            let (address, length, writable) = segment(k)
            let d = desc + 16 * UInt64(i)
            write64(d, address)
            write32(d + 8, length)
            let last = k == count - 1
            write32(d + 12, UInt32(last ? 0 : 1) | UInt32(writable ? 2 : 0) | UInt32(last ? 0 : next[i]) << 16)
            if !last { i = Int(next[i]) }
        }
        freeHead = Int(next[i])
        numFree -= count
        chainLength[head] = UInt16(count)
        write16(avail + 4 + 2 * UInt64(Int(availIdx) % size), UInt16(head))
        availIdx &+= 1
        return head
    }

    /// Publishes avail.idx and notifies if the device asked for it (§2.7.10: avail_event,
    /// read after a full fence so the store of idx is visible first).
    func kick() {
        write16(avail + 2, availIdx)
        guard availIdx != kickedIdx else { return }
        memoryFence()
        let old = kickedIdx
        kickedIdx = availIdx
        if eventIdx {
            let event = read16(availEventAddress)
            guard availIdx &- event &- 1 < availIdx &- old else { return }   // vring_need_event
        }
        write32(notify, index)
    }

    /// The device has returned something since `collect` last looked.
    var pending: Bool { read16(used + 2) != lastUsed }
    /// How many entries the device has returned since `collect` last looked.
    var completed: Int { Int(read16(used + 2) &- lastUsed) }

    /// Asks for the used-buffer interrupt only at the `count`th completion from now
    /// (used_event = last seen + count - 1, §2.7.10), then fences, so a check of
    /// `completed` after this sees every entry published before the device read it.
    /// A driver with several requests in flight sleeps through the first completions
    /// and wakes while the device still has work, instead of once per completion.
    func armInterrupt(after count: Int) {
        write16(usedEventAddress, lastUsed &+ UInt16(truncatingIfNeeded: max(count, 1) - 1))
        memoryFence()
    }

    /// Watches the used ring for up to `cycles` with the used-buffer interrupt suppressed
    /// (used_event half the index space away, §2.7.10), as Linux's cpuidle-haltpoll does
    /// before a halt; then asks for the interrupt again and re-checks, so a completion
    /// published meanwhile (without an interrupt) is not slept through. True if something
    /// arrived.
    func poll(cycles: UInt64) -> Bool {
        guard eventIdx, cycles > 0 else { return pending }
        write16(usedEventAddress, lastUsed &+ 0x8000)
        memoryFence()
        let until = rdtsc() &+ cycles
        while !pending && rdtsc() < until { cpuPause() }
        write16(usedEventAddress, lastUsed)
        memoryFence()
        return pending
    }

    /// Asks for an interrupt at the next used entry (used_event = last seen), fenced, so
    /// a caller that then sees `pending` false may halt.
    func armInterrupt() {
        write16(usedEventAddress, lastUsed)
        memoryFence()
    }

    /// Takes every used entry: `body(head, len)`. Stops and marks the queue corrupt on
    /// an impossible entry. Then asks for an interrupt at the next one (used_event), or
    /// for none (used_event half the index space away), and fences, so a caller that
    /// sees `pending` false after this may sleep.
    @discardableResult
    func collect(interrupt: Bool = true, _ body: (Int, UInt32) -> Void) -> Int {
        var n = 0
        while !corrupt {
            let idx = read16(used + 2)
            if idx == lastUsed { break }
            if Int(idx &- lastUsed) > size { corrupt = true; break }
            let e = used + 4 + 8 * UInt64(Int(lastUsed) % size)
            let id = Int(read32(e))
            let length = read32(e + 4)
            guard id < size, chainLength[id] != 0 else { corrupt = true; break }
            var last = id
            for _ in 1..<Int(chainLength[id]) { last = Int(next[last]) }
            next[last] = UInt16(freeHead)
            freeHead = id
            numFree += Int(chainLength[id])
            chainLength[id] = 0
            lastUsed &+= 1
            n += 1
            body(id, length)
        }
        write16(usedEventAddress, interrupt ? lastUsed : lastUsed &+ 0x8000)
        memoryFence()
        return n
    }
}

/// Devices announced as `virtio_mmio.device=<size>@<base>:<irq>` (pvmm; QEMU microvm with
/// acpi=off), else QEMU microvm's fixed window probed slot by slot.
enum Virtio {
    static var found: [(base: UInt64, irq: Int)] = []
    /// `pvmm_poll_us=N`: the VMM's device threads poll their rings, so a driver waiting
    /// for a completion polls the used ring this long (in TSC cycles) before it sleeps
    /// on the interrupt (`Virtqueue.poll`). 0 (QEMU, `--poll-us 0`): no polling.
    static var pollCycles: UInt64 = 0
    /// Drivers that wait through `Virtqueue.poll` leave the interrupt off after a
    /// `collect` (poll turns it back on before they sleep): a completion that lands while
    /// the driver still runs costs the device no irqfd and the guest no interrupt.
    static var polling: Bool { pollCycles > 0 }

    static func discover() {
        for w in words(Kernel.cmdline) {
            let key: StaticString = "virtio_mmio.device="
            let k = key.utf8CodeUnitCount
            guard w.count > k, matches(w[0..<k], key) else { continue }
            if let entry = parseDevice(Array(w[k...])) { found.append(entry) }
        }
        if found.isEmpty && ACPI.present && !Platform.underPVMM { probeMicrovm() }
        for f in found { mapUncached(f.base) }
    }

    /// "4K@0xd0000000:5": size (K/M suffix), base (hex or decimal), GSI.
    static func parseDevice(_ s: [UInt8]) -> (base: UInt64, irq: Int)? {
        guard let at = s.firstIndex(of: 64), let colon = s.lastIndex(of: 58), at < colon else { return nil }
        guard let size = parseNumber(s[..<at]), size > 0x100,
              let base = parseNumber(s[(at + 1)..<colon]), let irq = parseNumber(s[(colon + 1)...]) else { return nil }
        // Only inside the identity map, outside RAM, page-aligned enough to map.
        guard base & 0xFF == 0, base < BootLayout.minIdentityMap, !Kernel.overlapsRAM(base, 0x200), irq < UInt64(maxGSI) else { return nil }
        return (base, Int(irq))
    }

    /// Decimal or 0x hex, optional K/M suffix.
    static func parseNumber(_ s: ArraySlice<UInt8>) -> UInt64? {
        var digits = s
        var scale: UInt64 = 1
        if let last = digits.last, last == 75 || last == 107 { scale = 1024; digits = digits.dropLast() }
        else if let last = digits.last, last == 77 || last == 109 { scale = 1 << 20; digits = digits.dropLast() }
        var radix: UInt64 = 10
        if digits.count > 2 && digits[digits.startIndex] == 48 && (digits[digits.startIndex + 1] | 0x20) == 120 {
            radix = 16
            digits = digits.dropFirst(2)
        }
        guard !digits.isEmpty, digits.count <= 16 else { return nil }
        var v: UInt64 = 0
        for c in digits {
            let d: UInt64
            if c >= 48 && c <= 57 { d = UInt64(c - 48) }
            else if radix == 16 && (c | 0x20) >= 97 && (c | 0x20) <= 102 { d = UInt64((c | 0x20) - 87) }
            else { return nil }
            v = v &* radix &+ d
        }
        return v &* scale
    }

    /// QEMU microvm with ACPI lists its transports only in the DSDT; they sit at
    /// 0xfeb00000 + 512 * n with GSI 24 + n (24 of them) when it has a second IOAPIC,
    /// else 16 + n (8). Reading MagicValue/DeviceID of an empty slot is harmless.
    static func probeMicrovm() {
        let second = ACPI.ioapics.contains { $0.gsiBase == 24 }
        mapUncached(0xFEB0_0000)
        for n in 0..<(second ? 24 : 8) {
            let base: UInt64 = 0xFEB0_0000 + UInt64(n) * 512
            if read32(base) == VirtioReg.magicValue && read32(base + VirtioReg.deviceID) != 0 {
                found.append((base, (second ? 24 : 16) + n))
            }
        }
    }
    static let maxGSI = 48   // irq_entry's table size

    /// Discovers and starts every device: the first network device (ID 1), disks (ID 2)
    /// in order, the first console (ID 3).
    static func initialize() {
        discover()
        for f in found {
            guard read32(f.base) == VirtioReg.magicValue else { continue }
            let version = read32(f.base + VirtioReg.version)
            let id = read32(f.base + VirtioReg.deviceID)
            guard id == 1 || id == 2 || id == 3 else { continue }
            guard version == 2 else {
                Console.write("virtio: legacy device at 0x")
                Console.writeHex(f.base, digits: 8)
                Console.write(" skipped (version 1)\n")
                continue
            }
            let device = VirtioDevice(base: f.base, irq: f.irq)
            if id == 1 {
                Net.attach(device)
            } else if id == 2 {
                let disk = BlockDevice(device)
                if disk.start() { BlockDevice.disks.append(disk) }
            } else if VirtioConsole.device == nil {
                VirtioConsole.start(device)
            }
        }
    }

    /// Sleeps (or, without interrupts, pauses) until `ready()` or `timeoutMs` elapse (the
    /// timer is armed for the timeout: the kernel is tickless).
    /// Returns whether `ready()` held.
    static func wait(timeoutMs: UInt64, _ ready: () -> Bool) -> Bool {
        let t0 = rdtsc()
        while !ready() {
            if rdtsc() &- t0 > timeoutMs * Platform.tscKHz { return false }
            Platform.idle(SMP.bsp, until: t0 &+ timeoutMs * Platform.tscKHz, ready)
        }
        return true
    }
}
