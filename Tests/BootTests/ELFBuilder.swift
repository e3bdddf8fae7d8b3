import Boot
import GuestMemory

/// Builds small ELF64 images for tests. Segment data is appended after the program
/// headers; every field can be overridden to produce hostile files.
struct ELFBuilder {
    struct Segment {
        var type: UInt32 = 1
        var paddr: UInt64 = 0
        var data: [UInt8] = []
        var memsz: UInt64? = nil      // default: data.count
        var offset: UInt64? = nil     // default: where the data is placed
        var filesz: UInt64? = nil     // default: data.count
        var align: UInt64 = 4
    }

    var elfClass: UInt8 = 2
    var encoding: UInt8 = 1
    var machine: UInt16 = 62
    var type: UInt16 = 2
    var entry: UInt64 = 0
    var phentsize: UInt16 = 56
    var phnum: UInt16? = nil
    var phoff: UInt64 = 64
    var segments: [Segment] = []

    static func load(paddr: UInt64, _ data: [UInt8], memsz: UInt64? = nil) -> Segment {
        Segment(type: 1, paddr: paddr, data: data, memsz: memsz)
    }

    static func note(_ notes: [UInt8], align: UInt64 = 4) -> Segment {
        Segment(type: 4, data: notes, align: align)
    }

    /// One note: namesz, descsz, type, name (padded), desc (padded).
    static func noteBytes(name: [UInt8], type: UInt32, desc: [UInt8], align: Int = 4) -> [UInt8] {
        var b = le(UInt32(name.count)) + le(UInt32(desc.count)) + le(type) + name
        while (b.count) % align != 0 { b.append(0) }
        b += desc
        while b.count % align != 0 { b.append(0) }
        return b
    }

    static func pvhNote(_ entry: UInt64, size: Int = 8) -> [UInt8] {
        noteBytes(name: Array("Xen\0".utf8), type: 18, desc: size == 8 ? le(entry) : le(UInt32(truncatingIfNeeded: entry)))
    }

    static func pvmmNote(_ entry: UInt64) -> [UInt8] {
        noteBytes(name: Array("PVMM\0".utf8), type: 1, desc: le(entry))
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }

    func build() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 64)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            for (k, b) in ELFBuilder.le(v).enumerated() { out[at + k] = b }
        }
        out[0] = 0x7F; out[1] = 0x45; out[2] = 0x4C; out[3] = 0x46
        out[4] = elfClass; out[5] = encoding; out[6] = 1
        put(type, 16); put(machine, 18); put(UInt32(1), 20); put(entry, 24)
        put(phoff, 32); put(UInt16(64), 52); put(phentsize, 54)
        put(phnum ?? UInt16(segments.count), 56)
        let dataStart = 64 + segments.count * 56
        var data: [UInt8] = []
        var phdrs: [UInt8] = []
        for s in segments {
            while data.count % 16 != 0 { data.append(0) }
            let off = s.offset ?? UInt64(dataStart + data.count)
            data += s.data
            phdrs += ELFBuilder.le(s.type) + ELFBuilder.le(UInt32(5)) + ELFBuilder.le(off)
                + ELFBuilder.le(s.paddr) + ELFBuilder.le(s.paddr)
                + ELFBuilder.le(s.filesz ?? UInt64(s.data.count)) + ELFBuilder.le(s.memsz ?? UInt64(s.data.count))
                + ELFBuilder.le(s.align)
        }
        return out + phdrs + data
    }
}

func loadELF(_ bytes: [UInt8], _ mem: GuestMemory, prefer: Bool = true) -> Result<LoadedKernel, BootError> {
    bytes.withUnsafeBytes { buf in
        Result { () throws(BootError) in try ELFLoader.load(buf, into: mem, preferPVMMEntry: prefer) }
    }
}

func smallMemory(_ mib: UInt64 = 64) -> GuestMemory {
    try! GuestMemory(size: mib << 20)
}

func prepareKernel(_ bytes: [UInt8], _ mem: GuestMemory, cmdline: [UInt8]) throws -> (LoadedKernel, InitialCPUState) {
    let r: Result<(LoadedKernel, InitialCPUState), BootError> = bytes.withUnsafeBytes { buf in
        Result { () throws(BootError) in try BootBuilder.prepare(kernel: buf, mem: mem, cmdline: cmdline) }
    }
    return try r.get()
}
