import GuestMemory
import PVMMABI

/// Builds the low-memory boot structures (docs/boot.md has the layout) and the boot
/// vCPU's initial state for either entry.
public enum BootBuilder {
    /// Flat 32-bit code for the PVH entry (the PVH guest loads its own GDT at once).
    public static let code32Selector = BootSelectors.code32

    /// GDT at BootLayout.gdt: null, code64, data, TSS (16 bytes), code32.
    public static let gdtEntries: [UInt64] = [
        0,
        descriptor(base: 0, limit: 0xFFFFF, access: 0x9B, flags: 0xA), // 0x08 P DPL0 code exec/read/accessed, G L
        descriptor(base: 0, limit: 0xFFFFF, access: 0x93, flags: 0xC), // 0x10 P DPL0 data rw/accessed, G DB
        descriptor(base: UInt32(BootLayout.tss), limit: tssLimit, access: 0x8B, flags: 0), // 0x18 busy 64-bit TSS
        BootLayout.tss >> 32,                                          // 0x20 TSS base[63:32]
        descriptor(base: 0, limit: 0xFFFFF, access: 0x9B, flags: 0xC), // 0x28 32-bit code, G DB
    ]
    public static var gdtLimit: UInt16 { UInt16(gdtEntries.count * 8 - 1) }
    public static let tssLimit: UInt32 = 0x67

    static let pageSize: UInt64 = 4096
    static let gib: UInt64 = 1 << 30
    static let largePage: UInt64 = 2 << 20
    /// P | RW | US: this host's PVM needs U/S=1 at every level (host-kvm.md).
    static let tableFlags: UInt64 = 0x7
    static let leafFlags: UInt64 = 0x87 // | PS

    /// Encodes an 8-byte segment descriptor: `access` is P/DPL/S/type, `flags` is G/DB/L/AVL.
    public static func descriptor(base: UInt32, limit: UInt32, access: UInt8, flags: UInt8) -> UInt64 {
        let b = UInt64(base), l = UInt64(limit)
        return (l & 0xFFFF) | (b & 0xFF_FFFF) << 16 | UInt64(access) << 40
            | ((l >> 16) & 0xF) << 48 | UInt64(flags & 0xF) << 52 | (b >> 24) << 56
    }

    /// Identity-maps [0, identityMapEnd rounded up to 1 GiB) with 2 MiB pages.
    public static func buildPageTables(_ mem: GuestMemory, identityMapEnd: UInt64) throws(BootError) {
        let maxEnd = UInt64(BootLayout.maxPageDirectories) * gib
        guard identityMapEnd <= maxEnd else { throw .identityMapTooLarge(end: identityMapEnd, max: maxEnd) }
        let dirs = max(1, (identityMapEnd + gib - 1) / gib)
        var pml4 = [UInt64](repeating: 0, count: 512)
        pml4[0] = BootLayout.pdpt | tableFlags // slot 256 stays empty: forbidden on PVM
        var pdpt = [UInt64](repeating: 0, count: 512)
        var pd = [UInt64](repeating: 0, count: 512)
        try writeTable(mem, pml4, at: BootLayout.pml4, "the PML4")
        for i in 0..<dirs {
            let pdAddr = BootLayout.pageDirectories + i * pageSize
            pdpt[Int(i)] = pdAddr | tableFlags
            for j in 0..<512 { pd[j] = (i * gib + UInt64(j) * largePage) | leafFlags }
            try writeTable(mem, pd, at: pdAddr, "page directory \(i)")
        }
        try writeTable(mem, pdpt, at: BootLayout.pdpt, "the PDPT")
    }

    static func writeTable(_ mem: GuestMemory, _ t: [UInt64], at addr: UInt64, _ what: String) throws(BootError) {
        do {
            try mem.withBytes(at: addr, length: t.count * 8) { dst in
                for (i, v) in t.enumerated() { dst.storeBytes(of: v.littleEndian, toByteOffset: i * 8, as: UInt64.self) }
            }
        } catch { throw .guestMemory(what: what, error) }
    }

    /// Writes the GDT and a zeroed TSS (I/O bitmap offset past the limit: no bitmap).
    public static func buildGDT(_ mem: GuestMemory) throws(BootError) {
        try writeTable(mem, gdtEntries, at: BootLayout.gdt, "the GDT")
        do {
            try mem.fill(0, at: BootLayout.tss, count: UInt64(tssLimit) + 1)
            try mem.write(UInt16(tssLimit + 1), at: BootLayout.tss + 0x66)
        } catch { throw .guestMemory(what: "the TSS", error) }
    }

    /// The most memory-map entries between BootLayout.memmap and BootLayout.cmdline.
    public static var maxMemmapEntries: Int { Int(BootLayout.cmdline - BootLayout.memmap) / HVMMemmapEntry.size }

    /// The memory map, sorted: below 1 MiB pvmm's boot area reserved, the low RAM a
    /// kernel's AP trampoline needs usable, the EBDA and legacy hole (with the ACPI
    /// tables) reserved; then every RAM region from 1 MiB.
    public static func memoryMap(_ mem: GuestMemory) -> [(addr: UInt64, size: UInt64, type: UInt32)] {
        let reserved = HVMMemmapEntry.typeReserved, ram = HVMMemmapEntry.typeRAM
        var map: [(addr: UInt64, size: UInt64, type: UInt32)] = []
        let low = BootLayout.lowRAMEnd - BootLayout.lowRAMStart
        if mem.contains(BootLayout.lowRAMStart, length: low) {
            map += [(0, BootLayout.lowRAMStart, reserved), (BootLayout.lowRAMStart, low, ram),
                    (BootLayout.lowRAMEnd, BootLayout.reservedEnd - BootLayout.lowRAMEnd, reserved)]
        } else {
            map.append((0, BootLayout.reservedEnd, reserved))
        }
        for r in mem.regions {
            let start = max(r.guestBase, BootLayout.reservedEnd)
            if r.guestEnd > start { map.append((start, r.guestEnd - start, ram)) }
        }
        return map
    }

    /// Where an initrd of `size` bytes goes: page-aligned, as high as it fits in the RAM
    /// below 4 GiB (Linux's PVH code keeps only a 32-bit ramdisk address; high, as QEMU
    /// and bootloaders put it, so the kernel's early allocations above its image do not
    /// meet it), and above `kernelEnd`.
    public static func placeInitrd(size: UInt64, mem: GuestMemory, kernelEnd: UInt64) throws(BootError) -> UInt64 {
        let floor = (max(kernelEnd, BootLayout.reservedEnd) + pageSize - 1) & ~(pageSize - 1)
        let below4G = mem.regions.filter { $0.guestEnd <= BootLayout.minIdentityMap }
        let top = below4G.map(\.guestEnd).max() ?? 0
        let base = below4G.first { $0.guestEnd == top }?.guestBase ?? 0
        guard size <= top, (top - size) & ~(pageSize - 1) >= max(floor, base) else {
            // Saturating: the size is the user's file's.
            let (end, o) = floor.addingReportingOverflow(size)
            let needed = o || end > UInt64.max >> 1 ? UInt64.max >> 20 : (end + pageSize - 1 + (1 << 20) - 1) >> 20
            throw .initrdDoesNotFit(size: size, kernelEnd: kernelEnd, ramTop: top, neededMiB: needed)
        }
        return (top - size) & ~(pageSize - 1)
    }

    /// Writes hvm_start_info v1, the command line, the memory map and, with `module`
    /// (guest-physical address and size of an initrd already in RAM), its module-list
    /// entry; returns the start info's guest-physical address (the value for RBX).
    public static func writeStartInfo(_ mem: GuestMemory, cmdline: [UInt8], rsdp: UInt64,
                                      module: (address: UInt64, size: UInt64)? = nil) throws(BootError) -> UInt64 {
        guard cmdline.count < BootLayout.cmdlineMax else {
            throw .commandLineTooLong(length: cmdline.count, max: BootLayout.cmdlineMax - 1)
        }
        if let nul = cmdline.firstIndex(of: 0) { throw .commandLineContainsNUL(offset: nul) }
        let map = memoryMap(mem)
        guard map.count <= maxMemmapEntries else {
            throw .tooManyMemoryMapEntries(count: map.count, max: maxMemmapEntries)
        }
        let si = BootLayout.startInfo
        do {
            try mem.write(cmdline, at: BootLayout.cmdline)
            try mem.write(UInt8(0), at: BootLayout.cmdline + UInt64(cmdline.count))
            for (k, (addr, len, type)) in map.enumerated() {
                let e = BootLayout.memmap + UInt64(k * HVMMemmapEntry.size)
                try mem.write(addr, at: e + UInt64(HVMMemmapEntry.addr))
                try mem.write(len, at: e + UInt64(HVMMemmapEntry.length))
                try mem.write(type, at: e + UInt64(HVMMemmapEntry.type))
                try mem.write(UInt32(0), at: e + 20)
            }
            try mem.fill(0, at: si, count: UInt64(HVMStartInfo.size))
            try mem.write(HVMStartInfo.magicValue, at: si + UInt64(HVMStartInfo.magic))
            try mem.write(UInt32(1), at: si + UInt64(HVMStartInfo.version))
            try mem.write(BootLayout.cmdline, at: si + UInt64(HVMStartInfo.cmdlinePaddr))
            try mem.write(rsdp, at: si + UInt64(HVMStartInfo.rsdpPaddr))
            try mem.write(BootLayout.memmap, at: si + UInt64(HVMStartInfo.memmapPaddr))
            try mem.write(UInt32(map.count), at: si + UInt64(HVMStartInfo.memmapEntries))
            try mem.fill(0, at: BootLayout.modlist, count: UInt64(HVMModlistEntry.size))
            if let module {
                try mem.write(module.address, at: BootLayout.modlist + UInt64(HVMModlistEntry.paddr))
                try mem.write(module.size, at: BootLayout.modlist + UInt64(HVMModlistEntry.length))
                try mem.write(UInt32(1), at: si + UInt64(HVMStartInfo.nrModules))
                try mem.write(BootLayout.modlist, at: si + UInt64(HVMStartInfo.modlistPaddr))
            }
        } catch { throw .guestMemory(what: "the start info", error) }
        return si
    }

    static func segment(_ selector: UInt16) -> SegmentState {
        let i = Int(selector >> 3)
        let high = i + 1 < gdtEntries.count ? gdtEntries[i + 1] : 0
        return SegmentState(descriptor: gdtEntries[i], high: selector == BootSelectors.tss ? high : 0, selector: selector)
    }

    /// The vCPU state for `kernel`'s entry. Segment state is decoded from `gdtEntries`,
    /// so the hidden parts always match what the guest would reload.
    public static func initialState(for kernel: LoadedKernel, startInfo: UInt64) -> InitialCPUState {
        let data = segment(BootSelectors.data)
        var s = InitialCPUState(
            rip: kernel.entry, rsp: BootLayout.bootStackTop, rbx: startInfo, rsi: startInfo,
            rflags: BootCPU.rflags, cr0: BootCPU.cr0, cr3: BootLayout.pml4, cr4: BootCPU.cr4, efer: BootCPU.efer,
            cs: segment(BootSelectors.code64), ds: data, es: data, fs: data, gs: data, ss: data,
            tr: segment(BootSelectors.tss), ldt: .noLDT,
            gdt: TableState(base: BootLayout.gdt, limit: gdtLimit), idt: TableState(base: 0, limit: 0))
        if kernel.entryKind == .pvh32 {
            // Xen PVH: protected mode, paging off; CR0 = PE|ET (ET is hardwired to 1).
            s.cr0 = 0x11; s.cr3 = 0; s.cr4 = 0; s.efer = 0
            s.cs = segment(code32Selector)
            s.rsi = 0
        }
        return s
    }

    /// Loads the kernel (and `initrd`, placed by `placeInitrd` and announced as PVH
    /// module 0) and builds everything its entry needs. For the 64-bit entry the
    /// identity map covers max(RAM end, 4 GiB) so MMIO below 4 GiB is mapped too.
    public static func prepare(kernel file: UnsafeRawBufferPointer, mem: GuestMemory, cmdline: [UInt8],
                               rsdp: UInt64 = 0, initrd: UnsafeRawBufferPointer? = nil,
                               preferPVMMEntry: Bool = true) throws(BootError) -> (LoadedKernel, InitialCPUState) {
        let kernel = try ELFLoader.load(file, into: mem, preferPVMMEntry: preferPVMMEntry)
        var module: (address: UInt64, size: UInt64)?
        if let initrd {
            let size = UInt64(initrd.count)
            let at = try placeInitrd(size: size, mem: mem, kernelEnd: kernel.imageEnd)
            do { try mem.write(bytes: initrd, at: at) } catch { throw .guestMemory(what: "the initrd", error) }
            module = (at, size)
        }
        try buildGDT(mem)
        let si = try writeStartInfo(mem, cmdline: cmdline, rsdp: rsdp, module: module)
        if kernel.entryKind == .pvmm64 {
            try buildPageTables(mem, identityMapEnd: max(mem.ramEnd, BootLayout.minIdentityMap))
        }
        // VIF.if = 0 and nothing pending until the guest enables interrupts.
        do { try mem.fill(0, at: BootLayout.vif, count: GuestMemory.pageSize) }
        catch { throw .guestMemory(what: "the VIF page", error) }
        return (kernel, initialState(for: kernel, startInfo: si))
    }
}
