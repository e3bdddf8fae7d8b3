// Kernel entry from boot.S, boot information, exception reports.

/// pvos's power-off statuses (pvmm exits with them).
enum ExitStatus {
    static let ok: UInt32 = 0
    static let exception: UInt32 = 3     // CPU exception (vector 0-31 except #DF)
    static let doubleFault: UInt32 = 4
    static let outOfMemory: UInt32 = 5
    static let badBootInfo: UInt32 = 6   // no valid hvm_start_info
}

@inline(__always) func load<T: FixedWidthInteger>(_ address: UInt64, _ offset: Int, as: T.Type) -> T {
    UnsafeRawPointer(bitPattern: UInt(address))!.loadUnaligned(fromByteOffset: offset, as: T.self)
}

@_extern(c, "pvos_apic_on_addr") func apicOnAddress() -> UInt64

enum Kernel {
    static let version: StaticString = "0.1"
    static var cmdline: [UInt8] = []
    static var options: [(key: [UInt8], value: [UInt8])] = []
    static var inException = false

    /// The NUL-terminated command line as a buffer (no allocation: used before the heap).
    static func rawCmdline(_ address: UInt64) -> UnsafeBufferPointer<UInt8> {
        guard address != 0, let p = UnsafePointer<UInt8>(bitPattern: UInt(address)) else {
            return UnsafeBufferPointer(start: nil, count: 0)
        }
        var n = 0
        while n < BootLayout.cmdlineMax - 1 && p[n] != 0 { n += 1 }
        return UnsafeBufferPointer(start: p, count: n)
    }

    static func hasWord(_ text: UnsafeBufferPointer<UInt8>, _ word: StaticString) -> Bool {
        var start = 0
        while start < text.count {
            var end = start
            while end < text.count && text[end] != 32 && text[end] != 9 { end += 1 }
            if matches(UnsafeBufferPointer(rebasing: text[start..<end]), word) { return true }
            start = end + 1
        }
        return false
    }

    static var memmap: UInt64 = 0
    static var memmapEntries = 0
    static let maxMemmapEntries = 128
    static var bootData: [(UInt64, UInt64)] = []   // start info, memory map, command line

    /// Builds the free page ranges from the (possibly unsorted, zero-terminated) memory map.
    static func initializeMemory(_ info: UInt64, _ cmdlineLength: Int) {
        memmap = load(info, HVMStartInfo.memmapPaddr, as: UInt64.self)
        memmapEntries = min(Int(load(info, HVMStartInfo.memmapEntries, as: UInt32.self)), maxMemmapEntries)
        for i in 0..<memmapEntries {
            let e = memmap + UInt64(i * HVMMemmapEntry.size)
            let addr = load(e, HVMMemmapEntry.addr, as: UInt64.self)
            let length = load(e, HVMMemmapEntry.length, as: UInt64.self)
            let type = load(e, HVMMemmapEntry.type, as: UInt32.self)
            if type == HVMMemmapEntry.typeRAM && length != 0 { Pages.addRAM(addr, length) }
        }
        Pages.exclude(imageStart(), imageEnd() - imageStart())
        Pages.exclude(info, UInt64(HVMStartInfo.size))
        Pages.exclude(memmap, UInt64(memmapEntries * HVMMemmapEntry.size))
        let cmdline = load(info, HVMStartInfo.cmdlinePaddr, as: UInt64.self)
        if cmdline != 0 { Pages.exclude(cmdline, UInt64(cmdlineLength + 1)) }
        findInitrd(info)
        ACPI.locate(load(info, HVMStartInfo.rsdpPaddr, as: UInt64.self))  // before any allocation
        Heap.initialize()
        bootData = [(info, UInt64(HVMStartInfo.size)), (memmap, UInt64(memmapEntries * HVMMemmapEntry.size)),
                    (cmdline, UInt64(cmdlineLength + 1))]
    }

    /// PVH module 0, the initrd (pvmm's --initrd, QEMU's -initrd), when the start info
    /// has one inside the memory map; its pages stay out of the allocator.
    static var initrdAddress: UInt64 = 0
    static var initrdSize: UInt64 = 0

    static func findInitrd(_ info: UInt64) {
        guard load(info, HVMStartInfo.nrModules, as: UInt32.self) > 0 else { return }
        let list = load(info, HVMStartInfo.modlistPaddr, as: UInt64.self)
        guard inMemoryMap(list, UInt64(HVMModlistEntry.size)) else { return }
        let address = load(list, HVMModlistEntry.paddr, as: UInt64.self)
        let size = load(list, HVMModlistEntry.length, as: UInt64.self)
        guard size > 0, inMemoryMap(address, size) else { return }
        (initrdAddress, initrdSize) = (address, size)
        Pages.exclude(address, size)
    }

    /// FNV-1a (64-bit) of the initrd's bytes: what `info` shows so a test can check them.
    static func initrdChecksum() -> UInt64 {
        let p = UnsafePointer<UInt8>(bitPattern: UInt(initrdAddress))!
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<Int(initrdSize) { h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3 }
        return h
    }

    /// [start, start + length) lies inside one memory-map entry (any type) below 4 GiB.
    static func inMemoryMap(_ start: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow, end <= BootLayout.minIdentityMap else { return false }
        for i in 0..<memmapEntries {
            let e = memmap + UInt64(i * HVMMemmapEntry.size)
            let addr = load(e, HVMMemmapEntry.addr, as: UInt64.self)
            let size = load(e, HVMMemmapEntry.length, as: UInt64.self)
            if load(e, HVMMemmapEntry.type, as: UInt32.self) != 0 && start >= addr && end <= addr &+ size && addr <= addr &+ size {
                return true
            }
        }
        return false
    }

    /// [start, start + length) touches type-1 RAM.
    static func overlapsRAM(_ start: UInt64, _ length: UInt64) -> Bool {
        for i in 0..<memmapEntries {
            let e = memmap + UInt64(i * HVMMemmapEntry.size)
            let addr = load(e, HVMMemmapEntry.addr, as: UInt64.self)
            let size = load(e, HVMMemmapEntry.length, as: UInt64.self)
            if load(e, HVMMemmapEntry.type, as: UInt32.self) == HVMMemmapEntry.typeRAM && start < addr &+ size && addr < start &+ length {
                return true
            }
        }
        return false
    }

    /// MADT -> x2APIC -> IOAPIC (COM1's IRQ 4) -> one-shot timer -> kvmclock -> APs. Without a
    /// MADT or a working x2APIC the console stays polled, as on a machine without an
    /// interrupt controller (pvmm before it had one).
    static func initializeInterrupts() {
        ACPI.parseMADT()
        // TSC-deadline mode needs no calibration (0.2 ms of boot); count mode does.
        if ACPI.present && APIC.enableLocal() && (Timer.detectTSCDeadline() || APIC.calibrate()) {
            APIC.bspID = APIC.id()
            SMP.bsp.setField(CPU.apic, UInt64(APIC.bspID))
            APIC.on = true
            write64(apicOnAddress(), 1)
            if IOAPIC.initialize() && IOAPIC.routeISA(4, to: APIC.bspID) { Console.enableInterrupts() }
            Timer.initializeCPU(SMP.bsp)
            PowerButton.enable()
        }
        Clock.initialize()
        if APIC.on {
            Platform.enableInterrupts(SMP.bsp)
            SMP.startAPs()
        }
    }

    /// Words; `novif` and `console=` are consumed, other key=value pairs kept for `info`.
    static func parseCommandLine(_ text: UnsafeBufferPointer<UInt8>) {
        cmdline = Array(text)
        for w in words(cmdline) {
            guard let eq = w.firstIndex(of: 61) else { continue }
            let key = Array(w[..<eq])
            if matches(key, "console") { continue }
            if matches(key, "pvmm_msi"), let v = Virtio.parseNumber(w[(eq + 1)...]), v == UInt64(Vector.ioapicBase) {
                IOAPIC.msiFromVMM = true
            }
            if matches(key, "pvmm_poll_us"), let v = Virtio.parseNumber(w[(eq + 1)...]) {
                Virtio.pollCycles = min(v, 1000) * Platform.tscKHz / 1000   // the TSC rate is known by now
            }
            options.append((key: key, value: Array(w[(eq + 1)...])))
        }
    }

    /// The entries the VMM appends for its devices (`virtio_mmio.device=`, pvmm's
    /// `pvmm_irq_probe=` and `pvmm_msi=`), as opposed to the user's own options.
    static func isDeviceEntry(_ word: [UInt8]) -> Bool {
        guard let eq = word.firstIndex(of: 61) else { return false }
        return isDeviceKey(word[..<eq])
    }

    static func isDeviceKey<C: Collection>(_ key: C) -> Bool where C.Element == UInt8 {
        matches(key, "virtio_mmio.device") || matches(key, "pvmm_irq_probe") || matches(key, "pvmm_msi") || matches(key, "pvmm_poll_us")
    }
}

func matches<C: Collection>(_ bytes: C, _ s: StaticString) -> Bool where C.Element == UInt8 {
    guard bytes.count == s.utf8CodeUnitCount else { return false }
    var i = 0
    for b in bytes {
        if b != s.utf8Start[i] { return false }
        i += 1
    }
    return true
}

func words(_ line: [UInt8]) -> [[UInt8]] {
    var result: [[UInt8]] = []
    var current: [UInt8] = []
    for b in line {
        if b == 32 || b == 9 {
            if !current.isEmpty { result.append(current); current = [] }
        } else {
            current.append(b)
        }
    }
    if !current.isEmpty { result.append(current) }
    return result
}

@_cdecl("pvos_main")
public func pvosMain(_ startInfo: UInt64) -> Never {
    let valid = startInfo != 0 && load(startInfo, HVMStartInfo.magic, as: UInt32.self) == HVMStartInfo.magicValue
    let cmdline = Kernel.rawCmdline(valid ? load(startInfo, HVMStartInfo.cmdlinePaddr, as: UInt64.self) : 0)
    // First: until the VIF is registered every instruction is emulated.
    Platform.detect(noVIF: Kernel.hasWord(cmdline, "novif"))
    SMP.initializeBSP()
    Console.initialize()
    guard valid else {
        Console.write("pvos: no valid hvm_start_info\n")
        Platform.powerOff(ExitStatus.badBootInfo)
    }
    Kernel.initializeMemory(startInfo, cmdline.count)
    Kernel.parseCommandLine(cmdline)
    Kernel.initializeInterrupts()
    Virtio.initialize()
    Console.write("pvos ")
    Console.write(Kernel.version)
    Console.write(" (")
    Console.write(Platform.name)
    Console.write(")\n")
    Shell.run()
}

func exceptionName(_ vector: UInt64) -> StaticString {
    switch vector {
    case 0: return "#DE"
    case 1: return "#DB"
    case 2: return "NMI"
    case 3: return "#BP"
    case 4: return "#OF"
    case 5: return "#BR"
    case 6: return "#UD"
    case 7: return "#NM"
    case 8: return "#DF"
    case 10: return "#TS"
    case 11: return "#NP"
    case 12: return "#SS"
    case 13: return "#GP"
    case 14: return "#PF"
    case 16: return "#MF"
    case 17: return "#AC"
    case 18: return "#MC"
    case 19: return "#XM"
    case 20: return "#VE"
    case 21: return "#CP"
    default: return "reserved"
    }
}

/// Called by trap_common for an exception no fixup covers. frame[0..14] = r15..rax,
/// then vector, error, rip, cs, rflags, rsp, ss.
@_cdecl("pvos_exception")
public func pvosException(_ frame: UnsafePointer<UInt64>) -> Never {
    let vector = frame[15]
    let status = vector == 8 ? ExitStatus.doubleFault : ExitStatus.exception
    if Kernel.inException { Platform.powerOff(status) }  // fault while reporting: just stop
    Kernel.inException = true
    VirtioConsole.drainPolled()
    Console.freshLine()
    Console.write("EXCEPTION vector=")
    Console.writeDecimal(vector)
    Console.write(" (")
    Console.write(exceptionName(vector))
    Console.write(") error=0x")
    Console.writeHex(frame[16])
    Console.write(" rip=0x")
    Console.writeHex(frame[17])
    Console.write(" cr2=0x")
    let cr2 = Platform.faultAddress()
    Console.writeHex(cr2)
    Console.write("\n")
    PanicReporter.report(vector: vector, error: frame[16], rip: frame[17], cr2: cr2)
    Platform.powerOff(status)
}
