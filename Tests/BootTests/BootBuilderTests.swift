import Boot
import GuestMemory
import PVMMABI
import Testing

/// Translates a virtual address through the tables in guest RAM, checking that every
/// level has P|RW|US. Returns nil for a non-present entry.
func translate(_ mem: GuestMemory, _ va: UInt64) throws -> UInt64? {
    var table = BootLayout.pml4
    for (level, shift) in [(4, 39), (3, 30), (2, 21)] as [(Int, UInt64)] {
        let e: UInt64 = try mem.read(at: table + ((va >> shift) & 511) * 8)
        if e & 1 == 0 { return nil }
        #expect(e & 0x7 == 0x7, "level \(level) entry \(String(e, radix: 16)) lacks P|RW|US")
        if level == 2 {
            #expect(e & 0x80 != 0, "PD entry is not a 2 MiB page")
            return (e & 0x000F_FFFF_FFE0_0000) | (va & 0x1F_FFFF)
        }
        #expect(e & 0x80 == 0)
        table = e & 0x000F_FFFF_FFFF_F000
    }
    return nil
}

@Suite struct PageTables {
    @Test func identityMap() throws {
        let mem = smallMemory()
        try BootBuilder.buildPageTables(mem, identityMapEnd: BootLayout.minIdentityMap)
        for va: UInt64 in [0, 0x10_0000, 0x20_1234, (3 << 30) + 0x1234_5678, (4 << 30) - 1] {
            #expect(try translate(mem, va) == va)
        }
        #expect(try translate(mem, 4 << 30) == nil)
        let slot256: UInt64 = try mem.read(at: BootLayout.pml4 + 256 * 8)
        #expect(slot256 == 0)
        for i: UInt64 in 1..<512 { #expect(try mem.read(UInt64.self, at: BootLayout.pml4 + i * 8) == 0) }
    }

    @Test func roundsUpToGiB() throws {
        let mem = smallMemory()
        try BootBuilder.buildPageTables(mem, identityMapEnd: (5 << 30) + 1)
        #expect(try translate(mem, (6 << 30) - 1) == (6 << 30) - 1)
        #expect(try translate(mem, 6 << 30) == nil)
        try BootBuilder.buildPageTables(mem, identityMapEnd: 64 << 30)
        #expect(try translate(mem, (64 << 30) - 1) == (64 << 30) - 1)
    }

    @Test func tooLarge() {
        #expect(throws: BootError.identityMapTooLarge(end: (64 << 30) + 1, max: 64 << 30)) {
            try BootBuilder.buildPageTables(smallMemory(), identityMapEnd: (64 << 30) + 1)
        }
        #expect(throws: BootError.self) { try BootBuilder.buildPageTables(smallMemory(), identityMapEnd: .max) }
    }
}

@Suite struct GDT {
    func entries(_ mem: GuestMemory) throws -> [UInt64] {
        try (0..<6).map { (i: UInt64) throws in try mem.read(UInt64.self, at: BootLayout.gdt + i * 8) }
    }

    @Test func descriptors() throws {
        let mem = smallMemory()
        try mem.fill(0xFF, at: BootLayout.tss, count: 0x68)
        try BootBuilder.buildGDT(mem)
        let g = try entries(mem)
        #expect(g[0] == 0)
        let code64 = SegmentState(descriptor: g[1], selector: 0x08)
        #expect(code64.l && !code64.db && code64.dpl == 0 && code64.type == 0xB && code64.s && code64.present)
        let data = SegmentState(descriptor: g[2], selector: 0x10)
        #expect(!data.l && data.db && data.dpl == 0 && data.type == 0x3 && data.s && data.limit == 0xFFFF_FFFF)
        let tss = SegmentState(descriptor: g[3], high: g[4], selector: 0x18)
        #expect(tss.type == 0xB && !tss.s && tss.present && tss.base == BootLayout.tss && tss.limit == 0x67 && !tss.g)
        let code32 = SegmentState(descriptor: g[5], selector: 0x28)
        #expect(!code32.l && code32.db && code32.type == 0xB && code32.base == 0 && code32.limit == 0xFFFF_FFFF)
        #expect(BootBuilder.gdtLimit == 47)
        // The exact values docs/boot.md lists.
        #expect(g == [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x0000_8B00_3080_0067, 0, 0x00CF_9B00_0000_FFFF])
        // TSS zeroed, I/O bitmap offset beyond the limit.
        #expect(try mem.readBytes(at: BootLayout.tss, count: 0x66).allSatisfy { $0 == 0 })
        #expect(try mem.read(UInt16.self, at: BootLayout.tss + 0x66) == 0x68)
    }
}

@Suite struct StartInfo {
    @Test func contents() throws {
        let mem = try GuestMemory(size: 64 << 20, holeStart: 32 << 20, holeEnd: 64 << 20)
        let cmd = Array("console=ttyS0 quiet".utf8)
        let si = try BootBuilder.writeStartInfo(mem, cmdline: cmd, rsdp: 0xE0000)
        #expect(si == BootLayout.startInfo)
        func u32(_ o: Int) throws -> UInt32 { try mem.read(at: si + UInt64(o)) }
        func u64(_ o: Int) throws -> UInt64 { try mem.read(at: si + UInt64(o)) }
        #expect(try u32(HVMStartInfo.magic) == HVMStartInfo.magicValue)
        #expect(try u32(HVMStartInfo.version) == 1)
        #expect(try u32(HVMStartInfo.nrModules) == 0)
        #expect(try u64(HVMStartInfo.rsdpPaddr) == 0xE0000)
        #expect(try u64(HVMStartInfo.cmdlinePaddr) == BootLayout.cmdline)
        #expect(try mem.readBytes(at: BootLayout.cmdline, count: cmd.count + 1) == cmd + [0])
        #expect(try u64(HVMStartInfo.memmapPaddr) == BootLayout.memmap)
        #expect(try u32(HVMStartInfo.memmapEntries) == 5)
        func entry(_ k: UInt64) throws -> (UInt64, UInt64, UInt32) {
            let e = BootLayout.memmap + k * 24
            return (try mem.read(at: e), try mem.read(at: e + 8), try mem.read(at: e + 16))
        }
        // Below 1 MiB: pvmm's boot area reserved, 0x50000-0x9f000 usable (a kernel's AP
        // trampoline), the EBDA, legacy hole and ACPI tables reserved.
        #expect(try entry(0) == (0, 0x5_0000, 2))
        #expect(try entry(1) == (0x5_0000, 0x9_F000 - 0x5_0000, 1))
        #expect(try entry(2) == (0x9_F000, 0x10_0000 - 0x9_F000, 2))
        #expect(try entry(3) == (0x10_0000, mem.regions[0].size - 0x10_0000, 1))
        #expect(try entry(4) == (mem.regions[1].guestBase, mem.regions[1].size, 1))
        // Every boot structure pvmm writes lies in a reserved entry, and nothing overlaps.
        for a in [BootLayout.pml4, BootLayout.gdt, BootLayout.modlist, BootLayout.startInfo, BootLayout.cmdline,
                  BootLayout.vif, BootLayout.bootStackTop - 1,
                  BootLayout.pageDirectories + UInt64(BootLayout.maxPageDirectories) * 4096 - 1, BootLayout.acpi] {
            #expect(try (UInt64(0)..<5).contains { k in let e = try entry(k); return e.2 == 2 && a >= e.0 && a < e.0 + e.1 }, "\(a)")
        }
        #expect(try u32(HVMStartInfo.nrModules) == 0 && u64(HVMStartInfo.modlistPaddr) == 0)
    }

    @Test func initrdIsModuleZero() throws {
        let mem = try GuestMemory(size: 64 << 20)
        let si = try BootBuilder.writeStartInfo(mem, cmdline: [], rsdp: 0, module: (0x3F0_0000, 12345))
        #expect(try mem.read(UInt32.self, at: si + UInt64(HVMStartInfo.nrModules)) == 1)
        let list: UInt64 = try mem.read(at: si + UInt64(HVMStartInfo.modlistPaddr))
        #expect(list == BootLayout.modlist)
        #expect(try mem.read(UInt64.self, at: list + UInt64(HVMModlistEntry.paddr)) == 0x3F0_0000)
        #expect(try mem.read(UInt64.self, at: list + UInt64(HVMModlistEntry.length)) == 12345)
        #expect(try mem.read(UInt64.self, at: list + UInt64(HVMModlistEntry.cmdlinePaddr)) == 0)
        // The entry sits between the TSS and the start info, clear of both.
        #expect(list >= BootLayout.tss + 0x68 && list + UInt64(HVMModlistEntry.size) <= BootLayout.startInfo)
    }

    @Test func initrdPlacement() throws {
        let mem = try GuestMemory(size: 64 << 20)
        // High, page-aligned, ending within the last page of RAM.
        let at = try BootBuilder.placeInitrd(size: 10_001, mem: mem, kernelEnd: 0x20_0000)
        #expect(at == (64 << 20) - 12288 && at % 4096 == 0 && at + 10_001 <= 64 << 20)
        // Exactly the room between the kernel's (page-rounded) end and the top.
        #expect(try BootBuilder.placeInitrd(size: (64 << 20) - 0x20_1000, mem: mem, kernelEnd: 0x20_0001) == 0x20_1000)
        #expect(throws: BootError.initrdDoesNotFit(size: (64 << 20) - 0x20_0000, kernelEnd: 0x20_0001, ramTop: 64 << 20, neededMiB: 65)) {
            try BootBuilder.placeInitrd(size: (64 << 20) - 0x20_0000, mem: mem, kernelEnd: 0x20_0001)
        }
        #expect(throws: BootError.self) { try BootBuilder.placeInitrd(size: UInt64.max, mem: mem, kernelEnd: 0x20_0000) }
        // Above 4 GiB RAM: still below the hole (Linux's PVH ramdisk address is 32 bits).
        let big = try GuestMemory(size: 4 << 30, holeStart: BootLayout.mmioHoleStart, holeEnd: BootLayout.mmioHoleEnd)
        let hi = try BootBuilder.placeInitrd(size: 1 << 20, mem: big, kernelEnd: 0x20_0000)
        #expect(hi == BootLayout.mmioHoleStart - (1 << 20))
    }

    @Test func commandLineLimits() throws {
        let mem = smallMemory()
        _ = try BootBuilder.writeStartInfo(mem, cmdline: Array(repeating: 0x41, count: 4095), rsdp: 0)
        #expect(try mem.read(UInt8.self, at: BootLayout.cmdline + 4095) == 0)
        #expect(throws: BootError.commandLineTooLong(length: 4096, max: 4095)) {
            try BootBuilder.writeStartInfo(mem, cmdline: Array(repeating: 0x41, count: 4096), rsdp: 0)
        }
        #expect(throws: BootError.commandLineContainsNUL(offset: 2)) {
            try BootBuilder.writeStartInfo(mem, cmdline: [0x41, 0x41, 0, 0x41], rsdp: 0)
        }
        _ = try BootBuilder.writeStartInfo(mem, cmdline: [], rsdp: 0)
        #expect(try mem.read(UInt8.self, at: BootLayout.cmdline) == 0)
    }
}

@Suite struct InitialState {
    @Test func longModeEntry() {
        let k = LoadedKernel(entryKind: .pvmm64, entry: 0x20_0000, imageStart: 0x20_0000, imageEnd: 0x30_0000)
        let s = BootBuilder.initialState(for: k, startInfo: BootLayout.startInfo)
        #expect(s.rip == 0x20_0000 && s.rsp == BootLayout.bootStackTop)
        #expect(s.rbx == BootLayout.startInfo && s.rsi == BootLayout.startInfo && s.rflags == 2)
        #expect(s.cr0 == BootCPU.cr0 && s.cr3 == BootLayout.pml4 && s.cr4 == BootCPU.cr4 && s.efer == BootCPU.efer)
        #expect(s.cs.selector == 0x08 && s.cs.l && !s.cs.db && s.cs.type == 11 && s.cs.present)
        for d in [s.ds, s.es, s.fs, s.gs, s.ss] { #expect(d.selector == 0x10 && d.type == 3 && d.db && d.base == 0) }
        #expect(s.tr == SegmentState(base: BootLayout.tss, limit: 0x67, selector: 0x18, type: 11, present: true,
                                     dpl: 0, db: false, s: false, l: false, g: false))
        #expect(s.ldt.unusable)
        #expect(s.gdt == TableState(base: BootLayout.gdt, limit: 47) && s.idt == TableState(base: 0, limit: 0))
    }

    @Test func pvhEntry() {
        let k = LoadedKernel(entryKind: .pvh32, entry: 0x10_0040, imageStart: 0x10_0000, imageEnd: 0x30_0000)
        let s = BootBuilder.initialState(for: k, startInfo: 0x4000)
        #expect(s.rip == 0x10_0040 && s.rbx == 0x4000)
        #expect(s.cr0 == 0x11 && s.cr4 == 0 && s.efer == 0 && s.cr3 == 0)
        #expect(s.cs.selector == 0x28 && s.cs.db && !s.cs.l && s.cs.base == 0 && s.cs.limit == 0xFFFF_FFFF && s.cs.type == 11)
        for d in [s.ds, s.es, s.fs, s.gs, s.ss] { #expect(d.selector == 0x10 && d.limit == 0xFFFF_FFFF && d.db) }
        #expect(s.tr.selector == 0x18 && s.tr.limit == 0x67 && s.tr.type == 11)
        #expect(s.rflags & 0x2_0300 == 0)  // VM, IF, TF clear
    }
}

@Suite struct Prepare {
    @Test func everything() throws {
        let mem = smallMemory()
        try mem.fill(0xEE, at: BootLayout.vif, count: 4096)
        let file = kernel(notes: B.pvmmNote(0x20_0000)).build()
        let (k, s) = try prepareKernel(file, mem, cmdline: Array("x".utf8))
        #expect(k.entryKind == .pvmm64 && s.rip == 0x20_0000 && s.cr3 == BootLayout.pml4)
        #expect(try translate(mem, 0x20_0000) == 0x20_0000)
        #expect(try translate(mem, 0xFEC0_0000) == 0xFEC0_0000)  // MMIO below 4 GiB mapped
        #expect(try mem.read(UInt32.self, at: BootLayout.startInfo) == HVMStartInfo.magicValue)
        #expect(try mem.readBytes(at: BootLayout.vif, count: 4096).allSatisfy { $0 == 0 })
        #expect(try mem.read(UInt64.self, at: BootLayout.gdt + 8) != 0)
    }

    @Test func pvhSkipsPageTables() throws {
        let mem = smallMemory()
        let file = kernel(notes: B.pvhNote(0x20_0000)).build()
        let (k, s) = try prepareKernel(file, mem, cmdline: [])
        #expect(k.entryKind == .pvh32 && s.cr0 == 0x11)
        #expect(try mem.read(UInt64.self, at: BootLayout.pml4) == 0)
    }

    /// Both entries get the initrd as module 0, its bytes at the announced address.
    @Test(arguments: [true, false]) func initrdLandsWhereTheStartInfoSays(pvmm: Bool) throws {
        let mem = smallMemory()
        let file = kernel(notes: pvmm ? B.pvmmNote(0x20_0000) : B.pvhNote(0x20_0000)).build()
        let initrd = (0..<70_001).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        let r: Result<(LoadedKernel, InitialCPUState), BootError> = file.withUnsafeBytes { k in
            initrd.withUnsafeBytes { i in
                Result { () throws(BootError) in try BootBuilder.prepare(kernel: k, mem: mem, cmdline: [], initrd: i) }
            }
        }
        let (k, _) = try r.get()
        #expect(k.entryKind == (pvmm ? .pvmm64 : .pvh32))
        let si = BootLayout.startInfo
        #expect(try mem.read(UInt32.self, at: si + UInt64(HVMStartInfo.nrModules)) == 1)
        let entry: UInt64 = try mem.read(at: si + UInt64(HVMStartInfo.modlistPaddr))
        let at: UInt64 = try mem.read(at: entry + UInt64(HVMModlistEntry.paddr))
        #expect(try mem.read(UInt64.self, at: entry + UInt64(HVMModlistEntry.length)) == 70_001)
        #expect(at % 4096 == 0 && at >= k.imageEnd && at + 70_001 <= 64 << 20)
        #expect(try mem.readBytes(at: at, count: initrd.count) == initrd)
    }

    @Test func initrdTooLargeForRAMIsRefused() throws {
        let mem = smallMemory()
        let file = kernel(notes: B.pvmmNote(0x20_0000)).build()
        let big = [UInt8](repeating: 1, count: 63 << 20)
        let r: Result<(LoadedKernel, InitialCPUState), BootError> = file.withUnsafeBytes { k in
            big.withUnsafeBytes { i in
                Result { () throws(BootError) in try BootBuilder.prepare(kernel: k, mem: mem, cmdline: [], initrd: i) }
            }
        }
        guard case .failure(.initrdDoesNotFit(size: 63 << 20, kernelEnd: _, ramTop: 64 << 20, neededMiB: let n)) = r else {
            Issue.record("\(r)"); return
        }
        #expect(n > 64)
    }
}
