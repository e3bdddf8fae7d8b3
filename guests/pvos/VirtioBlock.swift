// virtio-blk (§5.2): one request queue; a request is header (readable, 16 bytes), data
// (one contiguous segment: the kernel's memory is identity mapped) and a status byte.
// Header and status live in a per-disk area indexed by the chain's head, so requests in
// flight never share them. Shell: blk, blk read/write/flush/bench.

enum BlockType {
    static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
}

final class BlockDevice {
    static var disks: [BlockDevice] = []
    static let featureRO: UInt64 = 1 << 5, featureFlush: UInt64 = 1 << 9
    static let wanted = VirtioFeature.version1 | VirtioFeature.eventIdx | featureRO | featureFlush

    let device: VirtioDevice
    var queue: Virtqueue? = nil
    var capacity: UInt64 = 0
    var readOnly = false
    var serial: [UInt8]? = nil   // GET_ID, asked on first `blk` (not at boot: no waits there)
    var meta: UInt64 = 0         // page 0: 256 headers x 16 B; page 1: 256 status bytes, id

    init(_ device: VirtioDevice) { self.device = device }

    /// Full initialisation (§3.1.1); also the recovery after a reset.
    func start() -> Bool {
        guard device.begin(wanted: BlockDevice.wanted) else { return false }
        if meta == 0 { meta = Pages.allocate(2) }
        guard meta != 0, let q = device.setupQueue(0, maxSize: 256, reuse: queue) else { device.fail(); return false }
        queue = q
        capacity = UInt64(device.config32(0)) | UInt64(device.config32(4)) << 32
        readOnly = device.features & BlockDevice.featureRO != 0
        device.driverOK()
        return true
    }

    func headerAddress(_ head: Int) -> UInt64 { meta + 16 * UInt64(head) }
    func statusAddress(_ head: Int) -> UInt64 { meta + pageSize + UInt64(head) }
    func status(_ head: Int) -> UInt8 { UnsafePointer<UInt8>(bitPattern: UInt(statusAddress(head)))!.pointee }

    /// Queues one request (the caller kicks). Nil if the ring is full.
    func submit(_ type: UInt32, _ sector: UInt64, _ data: UInt64, _ length: UInt32) -> Int? {
        guard let q = queue, q.numFree >= 3 else { return nil }
        let head = q.nextHead
        let h = headerAddress(head)
        write32(h, type)
        write32(h + 4, 0)
        write64(h + 8, sector)
        write8(statusAddress(head), 0xFF)
        let deviceWrites = type == BlockType.read || type == BlockType.getID
        let status = statusAddress(head)
        return q.add(length > 0 ? 3 : 2) { k in
            if k == 0 { return (h, 16, false) }
            if k == 1 && length > 0 { return (data, length, deviceWrites) }
            return (status, 1, true)
        }
    }

    /// Waits until `done()`; false on a broken device (NEEDS_RESET, impossible used
    /// entries) or after `timeoutMs`. Status is read only on a config interrupt, or every
    /// 50 ms when polling. With `wakeAfter` > 1 (requests in flight), a halt lasts until
    /// that many have completed (`Virtqueue.armInterrupt`), so the device keeps the rest
    /// to work on while this CPU wakes and refills the ring.
    func waitFor(timeoutMs: UInt64 = 30_000, wakeAfter: Int = 1, _ done: () -> Bool) -> Bool {
        guard let q = queue else { return false }
        let t0 = rdtsc()
        var lastCheck = t0
        while !done() {
            if q.corrupt { return false }
            let now = rdtsc()
            let config = device.takeInterrupts() & 2 != 0
            if config || (!device.interrupts && now &- lastCheck > Platform.tscKHz * 50) {
                lastCheck = now
                if device.broken { return false }
            }
            if now &- t0 > timeoutMs * Platform.tscKHz { return false }
            // Tickless: wake for the timeout, or every 10 ms to poll a device without
            // an interrupt line.
            let wake = device.interrupts ? t0 &+ timeoutMs * Platform.tscKHz : now &+ 10 * Platform.tscKHz
            // Polling pays when the next completion is the one awaited; with several in
            // flight the device has work left while this CPU wakes, and a spinning vCPU
            // only takes host CPU from the device thread.
            if device.interrupts && wakeAfter == 1 && q.poll(cycles: Virtio.pollCycles) { continue }
            if device.interrupts && wakeAfter > 1 { q.armInterrupt(after: wakeAfter) }
            Platform.idle(SMP.bsp, until: wake) { q.completed >= wakeAfter || device.interruptPending }
        }
        return true
    }

    /// One request, synchronously: its status (0 OK, 1 IOERR, 2 UNSUPP), or -1 if the
    /// device failed (it is then reset and re-initialised).
    func run(_ type: UInt32, _ sector: UInt64, _ data: UInt64, _ length: UInt32) -> Int {
        guard let q = queue, let head = submit(type, sector, data, length) else { return -1 }
        q.kick()
        var finished = false
        var bad = false
        let ok = waitFor {
            q.collect(interrupt: !Virtio.polling) { h, len in
                if h == head { finished = true; bad = len > length + 1 }
            }
            return finished
        }
        if !ok || bad {
            _ = start()
            return -1
        }
        return Int(status(head))
    }

    /// The device's serial (GET_ID: 20 bytes, NUL padded), asked once.
    func identify() -> [UInt8] {
        if let s = serial { return s }
        let buffer = meta + pageSize + 512
        for i in 0..<3 { write64(buffer + UInt64(8 * i), 0) }
        var id: [UInt8] = []
        if run(BlockType.getID, 0, buffer, 20) == 0 {
            for i in 0..<20 {
                let b = UnsafePointer<UInt8>(bitPattern: UInt(buffer) + UInt(i))!.pointee
                if b == 0 { break }
                id.append(b > 32 && b < 127 ? b : 63)
            }
        }
        serial = id
        return id
    }
}

/// CRC-32/IEEE (zlib's crc32), table driven, one byte at a time (no vector code).
enum CRC32 {
    static var table: [UInt32] = []

    static func checksum(_ address: UInt64, _ length: Int) -> UInt32 {
        if table.isEmpty {
            for n in 0..<256 {
                var c = UInt32(n)
                for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
                table.append(c)
            }
        }
        let p = UnsafePointer<UInt8>(bitPattern: UInt(address))!
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for i in 0..<length { c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }
}

/// The `blk write` pattern: byte i = low 8 bits of the i-th xorshift32 step from SEED.
func fillPattern(_ address: UInt64, _ length: Int, seed: UInt32) {
    var s = seed == 0 ? 1 : seed
    let p = UnsafeMutablePointer<UInt8>(bitPattern: UInt(address))!
    for i in 0..<length {
        s ^= s << 13
        s ^= s >> 17
        s ^= s << 5
        p[i] = UInt8(truncatingIfNeeded: s)
    }
}

func parseDecimal(_ w: [UInt8]) -> UInt64? {
    guard let v = Virtio.parseNumber(w[...]) else { return nil }
    return v
}

extension Shell {
    static func blk(_ args: ArraySlice<[UInt8]>) {
        guard let sub = args.first else { blkList(); return }
        let rest = Array(args.dropFirst())
        // Each subcommand's argument names; "" is a word (bench's read|write, seq|rand).
        let command: StaticString, usage: StaticString, names: [StaticString]
        if matches(sub, "read") {
            (command, usage, names) = ("blk read", "blk read DISK LBA COUNT", ["DISK", "LBA", "COUNT"])
        } else if matches(sub, "write") {
            (command, usage, names) = ("blk write", "blk write DISK LBA COUNT SEED", ["DISK", "LBA", "COUNT", "SEED"])
        } else if matches(sub, "flush") {
            (command, usage, names) = ("blk flush", "blk flush DISK", ["DISK"])
        } else if matches(sub, "bench") {
            (command, usage, names) = ("blk bench", "blk bench DISK read|write seq|rand BS DEPTH SECONDS",
                                       ["DISK", "", "", "BS", "DEPTH", "SECONDS"])
        } else {
            Console.write("usage: blk [read DISK LBA COUNT | write DISK LBA COUNT SEED | flush DISK | bench DISK read|write seq|rand BS DEPTH SECONDS]\n")
            return
        }
        guard rest.count == names.count else {
            Console.write("usage: ")
            Console.write(usage)
            Console.write(" (DISK = index, LBA and COUNT in 512-byte sectors)\n")
            return
        }
        var n: [UInt64] = []
        for (i, name) in names.enumerated() {
            if name.utf8CodeUnitCount == 0 { n.append(0); continue }
            guard let v = parseDecimal(rest[i]) else {
                blkArgumentError(command, name, rest[i], "is not a number")
                return
            }
            n.append(v)
        }
        guard n[0] < UInt64(BlockDevice.disks.count) else {
            Console.write(command)
            Console.write(": no disk ")
            Console.writeDecimal(n[0])
            if BlockDevice.disks.isEmpty {
                Console.write(" (there are no disks)\n")
            } else {
                Console.write(" (disks are 0 to ")
                Console.writeDecimal(UInt64(BlockDevice.disks.count - 1))
                Console.write(")\n")
            }
            return
        }
        let disk = BlockDevice.disks[Int(n[0])]
        if matches(sub, "read") {
            blkTransfer(disk, write: false, n[1], n[2], 0)
        } else if matches(sub, "write") {
            guard n[3] <= 0xFFFF_FFFF else { blkArgumentError(command, "SEED", rest[3], "is above 4294967295"); return }
            blkTransfer(disk, write: true, n[1], n[2], UInt32(n[3]))
        } else if matches(sub, "flush") {
            let s = disk.run(BlockType.flush, 0, 0, 0)
            if s == 0 { Console.write("flushed\n") } else { blkError("blk flush", s) }
        } else {
            let write = matches(rest[1], "write")
            guard write || matches(rest[1], "read") else { blkArgumentError(command, "mode", rest[1], "is not read or write"); return }
            let random = matches(rest[2], "rand")
            guard random || matches(rest[2], "seq") else { blkArgumentError(command, "pattern", rest[2], "is not seq or rand"); return }
            BlockBench.run(disk, write: write, random: random, n[3], n[4], n[5])
        }
    }

    /// `blk read: LBA 'y' is not a number`
    static func blkArgumentError(_ command: StaticString, _ name: StaticString, _ value: [UInt8], _ problem: StaticString) {
        Console.write(command)
        Console.write(": ")
        Console.write(name)
        Console.write(" '")
        Console.write(value)
        Console.write("' ")
        Console.write(problem)
        Console.put(10)
    }

    /// `blk0: 32768 sectors (16 MiB) rw id=NAME`
    static func blkList() {
        if BlockDevice.disks.isEmpty { Console.write("no disks\n") }
        for (i, d) in BlockDevice.disks.enumerated() {
            let id = d.identify()
            Console.write("blk")
            Console.writeDecimal(UInt64(i))
            Console.write(": ")
            Console.writeDecimal(d.capacity)
            Console.write(" sectors (")
            Console.writeDecimal(d.capacity >> 11)
            Console.write(d.readOnly ? " MiB) ro" : " MiB) rw")
            if !id.isEmpty { Console.write(" id="); Console.write(id) }
            Console.put(10)
        }
    }

    static func blkError(_ what: StaticString, _ status: Int) {
        Console.write(what)
        switch status {
        case 1: Console.write(": I/O error\n")
        case 2: Console.write(": unsupported\n")
        case -1: Console.write(": device failure (reset)\n")
        default: Console.write(": bad status\n")
        }
    }

    static let maxSectors: UInt64 = 2048

    static func blkTransfer(_ disk: BlockDevice, write: Bool, _ lba: UInt64, _ count: UInt64, _ seed: UInt32) {
        guard count >= 1 && count <= maxSectors && lba <= UInt64.max >> 10 else {
            Console.write("blk: COUNT must be 1-2048\n")
            return
        }
        let bytes = count * 512
        let pages = (bytes + pageSize - 1) / pageSize
        let buffer = Pages.allocate(pages)
        guard buffer != 0 else { Console.write("blk: out of memory\n"); return }
        if write { fillPattern(buffer, Int(bytes), seed: seed) }
        let s = disk.run(write ? BlockType.write : BlockType.read, lba, buffer, UInt32(bytes))
        if s == 0 {
            if write { Console.write("wrote "); Console.writeDecimal(count); Console.write(" sectors ") }
            Console.write("crc32 ")
            Console.writeHex(UInt64(CRC32.checksum(buffer, Int(bytes))), digits: 8)
            Console.put(10)
        } else {
            blkError(write ? "blk write" : "blk read", s)
        }
        Pages.release(buffer, pages)
    }
}
