// ACPI: RSDP (hvm_start_info.rsdp_paddr) -> XSDT or RSDT -> MADT. The VMM may hand over
// anything, so nothing is read before it is known to lie inside one memory-map entry
// below 4 GiB (what both identity maps cover), and no table is used unless its length is
// sane and its checksum is right. A bad table means "no ACPI": 1 CPU, polling.

@_extern(c, "pvos_checksum") func pvosChecksum(_ address: UInt64, _ length: UInt64) -> UInt8

enum ACPI {
    struct IOAPICEntry { var id: UInt8; var address: UInt64; var gsiBase: UInt32 }
    struct Override { var irq: UInt8; var gsi: UInt32; var flags: UInt16 }

    static let maxTableLength: UInt64 = 1 << 20
    static let maxRootEntries: UInt64 = 256
    static let maxIOAPICs = 8

    // Found by locate() before the heap exists; the rest by parseMADT().
    static var rsdp: UInt64 = 0, rsdpLength: UInt64 = 0
    static var root: UInt64 = 0, rootLength: UInt64 = 0
    static var madt: UInt64 = 0, madtLength: UInt64 = 0
    static var cpus: [UInt32] = []           // enabled processors' APIC ids, MADT order
    static var ioapics: [IOAPICEntry] = []
    static var overrides: [Override] = []
    static var present: Bool { madt != 0 }

    /// Finds the MADT without allocating (it runs before the heap exists) and keeps the
    /// page allocator away from every table it used.
    static func locate(_ pointer: UInt64) {
        guard pointer != 0, Kernel.inMemoryMap(pointer, 20), equal(pointer, "RSD PTR "),
              checksum(pointer, 20) == 0 else { return }
        rsdp = pointer
        rsdpLength = 20
        let revision = load(pointer, 15, as: UInt8.self)
        if revision >= 2 && Kernel.inMemoryMap(pointer, 36) {
            let length = UInt64(load(pointer, 20, as: UInt32.self))
            if length >= 36 && length <= 4096 && Kernel.inMemoryMap(pointer, length) && checksum(pointer, length) == 0 {
                rsdpLength = length
                let xsdt = load(pointer, 24, as: UInt64.self)
                if findMADT(xsdt, "XSDT", entrySize: 8) { return }
            }
        }
        _ = findMADT(UInt64(load(pointer, 16, as: UInt32.self)), "RSDT", entrySize: 4)
    }

    private static func findMADT(_ table: UInt64, _ signature: StaticString, entrySize: UInt64) -> Bool {
        guard let length = validTable(table, signature) else { return false }
        let n = min((length - 36) / entrySize, maxRootEntries)
        for i in 0..<n {
            let at = table + 36 + i * entrySize
            let p = entrySize == 8 ? load(at, 0, as: UInt64.self) : UInt64(load(at, 0, as: UInt32.self))
            if let m = validTable(p, "APIC"), m >= 44 {
                root = table; rootLength = length
                madt = p; madtLength = m
                Pages.exclude(rsdp, rsdpLength)
                Pages.exclude(root, rootLength)
                Pages.exclude(madt, madtLength)
                return true
            }
        }
        return false
    }

    /// The table's length if the header is readable, the signature matches, the length is
    /// sane and the whole table is readable and sums to zero.
    private static func validTable(_ address: UInt64, _ signature: StaticString) -> UInt64? {
        guard address != 0, Kernel.inMemoryMap(address, 36), equal(address, signature) else { return nil }
        let length = UInt64(load(address, 4, as: UInt32.self))
        guard length >= 36, length <= maxTableLength, Kernel.inMemoryMap(address, length),
              checksum(address, length) == 0 else { return nil }
        return length
    }

    /// Walks the MADT's entries; each one must fit in the table and be long enough for
    /// its type, or the walk stops (a length below 2 would never advance).
    static func parseMADT() {
        guard madt != 0 else { return }
        var o: UInt64 = 44
        while o + 2 <= madtLength {
            let e = madt + o
            let type = load(e, 0, as: UInt8.self)
            let length = UInt64(load(e, 1, as: UInt8.self))
            guard length >= 2, o + length <= madtLength else { break }
            switch type {
            case 0 where length >= 8:   // processor local APIC
                let id = UInt32(load(e, 3, as: UInt8.self))
                if load(e, 4, as: UInt32.self) & 1 != 0 && id != 0xFF { addCPU(id) }
            case 9 where length >= 16:  // processor local x2APIC
                let id = load(e, 4, as: UInt32.self)
                if load(e, 8, as: UInt32.self) & 1 != 0 && id != 0xFFFF_FFFF { addCPU(id) }
            case 1 where length >= 12:  // IOAPIC: registers at +0 and +0x10, never in RAM
                let address = UInt64(load(e, 4, as: UInt32.self))
                if ioapics.count < maxIOAPICs && address & 0xF == 0 && address != 0 && !Kernel.overlapsRAM(address, 0x20) {
                    ioapics.append(IOAPICEntry(id: load(e, 2, as: UInt8.self), address: address,
                                               gsiBase: load(e, 8, as: UInt32.self)))
                }
            case 2 where length >= 10:  // interrupt source override (bus 0 = ISA)
                if load(e, 2, as: UInt8.self) == 0 && overrides.count < 16 {
                    overrides.append(Override(irq: load(e, 3, as: UInt8.self), gsi: load(e, 4, as: UInt32.self),
                                              flags: load(e, 8, as: UInt16.self)))
                }
            default:
                break
            }
            o += length
        }
    }

    private static func addCPU(_ id: UInt32) {
        if cpus.count < SMP.maxCPUs && !cpus.contains(id) { cpus.append(id) }
    }

    /// True if [start, start+length) touches a table pvos read (for the trampoline page).
    static func overlaps(_ start: UInt64, _ length: UInt64) -> Bool {
        func hit(_ a: UInt64, _ n: UInt64) -> Bool { a != 0 && start < a + n && a < start + length }
        return hit(rsdp, rsdpLength) || hit(root, rootLength) || hit(madt, madtLength)
    }

    private static func checksum(_ address: UInt64, _ length: UInt64) -> UInt8 { pvosChecksum(address, length) }

    private static func equal(_ address: UInt64, _ s: StaticString) -> Bool {
        let p = UnsafePointer<UInt8>(bitPattern: UInt(address))!
        for i in 0..<s.utf8CodeUnitCount where p[i] != s.utf8Start[i] { return false }
        return true
    }
}
