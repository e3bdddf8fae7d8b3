import Boot
import GuestMemory
import Testing

/// Walks the tables the way a guest does and checks every checksum and pointer.
@Suite struct ACPITests {
    func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    func u64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
    func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    /// The table at guest address `a` inside `t`, checked: signature, length, checksum.
    func table(_ t: ACPITables, at a: UInt64, _ sig: String) -> [UInt8] {
        let o = Int(a - t.base)
        let sigBytes = Array(t.bytes[o..<(o + 4)])
        #expect(sigBytes == Array(sig.utf8))
        let len = Int(u32(t.bytes, o + 4))
        #expect(o + len <= t.bytes.count)
        #expect(sum(t.bytes[o..<(o + len)]) == 0, "\(sig) checksum")
        return Array(t.bytes[o..<(o + len)])
    }

    @Test(arguments: [1, 2, 8, 255, 300])
    func checksumsAndPointers(cpus: Int) throws {
        let t = ACPITables(cpus: cpus)
        let b = t.bytes
        #expect(Array(b[0..<8]) == Array("RSD PTR ".utf8))
        #expect(sum(b[0..<20]) == 0)
        #expect(sum(b[0..<36]) == 0)
        #expect(b[15] == 2) // revision 2: XSDT
        let xsdt = table(t, at: u64(b, 24), "XSDT")
        #expect(xsdt.count == 36 + 16)
        let fadt = table(t, at: u64(xsdt, 36), "FACP")
        let madt = table(t, at: u64(xsdt, 44), "APIC")
        #expect(fadt.count == 276)
        #expect(u32(fadt, 112) & (1 << 20) != 0) // hardware-reduced
        let dsdtAddr = u64(fadt, 140)
        #expect(UInt64(u32(fadt, 40)) == dsdtAddr)
        _ = table(t, at: dsdtAddr, "DSDT")

        #expect(u32(madt, 36) == 0xFEE0_0000)
        // ACPI 6.5 §5.2.12.12: APIC ids below 255 as local APIC (type 0) structures (what a
        // Linux without x2APIC support reads), only larger ones as local x2APIC (type 9).
        var o = 44, apics: [UInt32] = [], ioapics = 0, overrides = 0
        while o < madt.count {
            let type = madt[o], len = Int(madt[o + 1])
            try #require(len >= 2 && o + len <= madt.count)
            switch type {
            case 0:
                #expect(len == 8)
                #expect(madt[o + 2] == madt[o + 3]) // UID = APIC id
                #expect(u32(madt, o + 4) & 1 == 1) // enabled
                apics.append(UInt32(madt[o + 3]))
            case 9:
                #expect(len == 16)
                #expect(u32(madt, o + 8) & 1 == 1) // enabled
                #expect(u32(madt, o + 4) >= 255)
                apics.append(u32(madt, o + 4))
            case 1:
                ioapics += 1
                #expect(u32(madt, o + 4) == 0xFEC0_0000)
            case 2:
                overrides += 1
            default:
                Issue.record("unexpected MADT entry type \(type)")
            }
            o += len
        }
        #expect(apics == (0..<UInt32(cpus)).map { $0 })
        #expect(ioapics == 1)
        #expect(overrides == 1)
    }

    @Test func tablesFitTheirRegionAndLandInGuestMemory() throws {
        let t = ACPITables(cpus: 1024)
        #expect(t.base + UInt64(t.bytes.count) <= 0x10_0000)
        let mem = try GuestMemory(size: 16 << 20)
        try t.write(to: mem)
        #expect(try mem.readBytes(at: t.rsdp, count: 8) == Array("RSD PTR ".utf8))
    }

    @Test func dsdtCarriesTheGivenAML() {
        let aml: [UInt8] = [0x10, 0x05, 0x5C, 0x5F, 0x53, 0x42] // Scope(\_SB) {}
        let t = ACPITables(cpus: 1, dsdtBody: aml)
        let xsdt = table(t, at: u64(t.bytes, 24), "XSDT")
        let fadt = table(t, at: u64(xsdt, 36), "FACP")
        let dsdt = table(t, at: u64(fadt, 140), "DSDT")
        #expect(Array(dsdt[36...]) == aml)
    }
}
