import Boot
import GuestMemory
import PVMMABI
import Testing

typealias B = ELFBuilder

/// A kernel with code at 2 MiB (+ bss) and data at 4 MiB, and the given notes.
func kernel(notes: [UInt8], codeAt: UInt64 = 0x20_0000) -> ELFBuilder {
    var b = ELFBuilder()
    b.entry = 0xFFFF_FFFF_8100_0000
    b.segments = [
        B.load(paddr: codeAt, [0x90, 0x90, 0xF4, 0xEB, 0xFD], memsz: 0x3000),
        B.load(paddr: 0x40_0000, Array(repeating: 0xAB, count: 100)),
    ]
    if !notes.isEmpty { b.segments.append(B.note(notes)) }
    return b
}

@Suite struct ValidKernels {
    @Test func pvmmNoteKernelLoads() throws {
        let mem = smallMemory()
        try mem.fill(0xCC, at: 0x20_0000, count: 0x4000)  // bss must be cleared
        let k = try loadELF(kernel(notes: B.pvmmNote(0x20_0002)).build(), mem).get()
        #expect(k == LoadedKernel(entryKind: .pvmm64, entry: 0x20_0002, imageStart: 0x20_0000, imageEnd: 0x40_0064))
        #expect(try mem.readBytes(at: 0x20_0000, count: 5) == [0x90, 0x90, 0xF4, 0xEB, 0xFD])
        #expect(try mem.readBytes(at: 0x20_0005, count: 0x3000 - 5).allSatisfy { $0 == 0 })
        #expect(try mem.read(UInt8.self, at: 0x20_3000) == 0xCC)  // past memsz untouched
        #expect(try mem.readBytes(at: 0x40_0000, count: 100) == Array(repeating: 0xAB, count: 100))
    }

    @Test(arguments: [4, 8]) func pvhOnlyKernelLoads(descSize: Int) throws {
        let k = try loadELF(kernel(notes: B.pvhNote(0x20_0001, size: descSize)).build(), smallMemory()).get()
        #expect(k.entryKind == .pvh32)
        #expect(k.entry == 0x20_0001)
    }

    @Test func preferenceRules() throws {
        let both = kernel(notes: B.pvhNote(0x20_0001) + B.pvmmNote(0x20_0003)).build()
        #expect(try loadELF(both, smallMemory()).get().entryKind == .pvmm64)
        #expect(try loadELF(both, smallMemory(), prefer: false).get() .entry == 0x20_0001)
        // Only a PVMM note: used even when not preferred.
        let pvmmOnly = kernel(notes: B.pvmmNote(0x20_0003)).build()
        #expect(try loadELF(pvmmOnly, smallMemory(), prefer: false).get().entryKind == .pvmm64)
    }

    @Test func notesAcrossSegmentsAndOtherNotesSkipped() throws {
        var b = kernel(notes: B.noteBytes(name: Array("GNU\0".utf8), type: 3, desc: [1, 2, 3, 4, 5]))
        b.segments.append(B.note(B.noteBytes(name: [], type: 7, desc: []) + B.pvmmNote(0x20_0004)))
        #expect(try loadELF(b.build(), smallMemory()).get().entry == 0x20_0004)
    }

    @Test func eightByteAlignedNoteSegment() throws {
        var b = kernel(notes: [])
        b.segments.append(B.note(B.noteBytes(name: Array("GNU\0".utf8), type: 5, desc: [1, 2, 3, 4], align: 8)
                                 + B.noteBytes(name: Array("PVMM\0".utf8), type: 1, desc: B.le(UInt64(0x20_0000)), align: 8),
                                 align: 8))
        #expect(try loadELF(b.build(), smallMemory()).get().entry == 0x20_0000)
    }

    @Test func dynamicTypeLoadsAtPaddr() throws {
        var b = kernel(notes: B.pvmmNote(0x20_0000))
        b.type = 3
        #expect(try loadELF(b.build(), smallMemory()).get().imageStart == 0x20_0000)
    }

    @Test func zeroSizeLoadSegmentsIgnored() throws {
        var b = kernel(notes: B.pvmmNote(0x20_0000))
        b.segments.append(B.load(paddr: 0, []))  // memsz 0 at paddr 0: not "below 1 MiB"
        #expect(try loadELF(b.build(), smallMemory()).get().imageStart == 0x20_0000)
    }
}

@Suite struct HostileFiles {
    let good = kernel(notes: B.pvmmNote(0x20_0000))

    func expectError(_ b: ELFBuilder, _ e: BootError, mem: GuestMemory = smallMemory()) {
        #expect(loadELF(b.build(), mem) == .failure(e))
    }

    @Test func truncatedFiles() {
        let bytes = good.build()
        for n in [0, 1, 63] {
            #expect(loadELF(Array(bytes.prefix(n)), smallMemory()) == .failure(.fileTooSmall(size: n)))
        }
        // Program headers cut off.
        #expect(loadELF(Array(bytes.prefix(64 + 56 + 10)), smallMemory())
                == .failure(.programHeadersOutsideFile(offset: 64, count: 3, fileSize: 130)))
        // Segment data cut off.
        let cut = bytes.count - 40
        guard case .failure(.segmentDataOutsideFile) = loadELF(Array(bytes.prefix(cut)), smallMemory()) else {
            Issue.record("truncated segment data accepted"); return
        }
    }

    @Test func wrongIdentity() {
        var b = good; b.elfClass = 1; expectError(b, .notELF64(elfClass: 1))
        b = good; b.encoding = 2; expectError(b, .notLittleEndian(encoding: 2))
        b = good; b.machine = 3; expectError(b, .notX86_64(machine: 3))
        b = good; b.type = 1; expectError(b, .notExecutable(type: 1))
        var bytes = good.build(); bytes[1] = 0x46
        #expect(loadELF(bytes, smallMemory()) == .failure(.notELF))
        bytes = good.build(); bytes[6] = 2
        #expect(loadELF(bytes, smallMemory()) == .failure(.badELFVersion(2)))
    }

    @Test func programHeaderTable() {
        var b = good; b.phentsize = 64; expectError(b, .badProgramHeaderSize(64))
        b = good; b.phnum = 0; expectError(b, .badProgramHeaderCount(0))
        b = good; b.phnum = 0xFFFF; expectError(b, .badProgramHeaderCount(0xFFFF))
        b = good; b.phoff = UInt64.max - 10
        expectError(b, .programHeadersOutsideFile(offset: UInt64.max - 10, count: 3, fileSize: b.build().count))
    }

    @Test func noLoadSegment() {
        var b = ELFBuilder(); b.segments = [B.note(B.pvmmNote(0x20_0000))]
        expectError(b, .noLoadableSegment)
        b.segments.append(B.load(paddr: 0x20_0000, []))
        expectError(b, .noLoadableSegment)
    }

    @Test func fileSizeAboveMemorySize() {
        var b = good; b.segments[1].memsz = 10
        expectError(b, .segmentFileSizeExceedsMemorySize(segment: 1, fileSize: 100, memorySize: 10))
    }

    @Test func segmentBeyondRAM() {
        let mem = smallMemory()
        var b = good; b.segments[1].paddr = (64 << 20) - 50
        expectError(b, .segmentOutsideRAM(segment: 1, range: AddressRange((64 << 20) - 50, (64 << 20) + 50),
                                          ram: [AddressRange(0, 64 << 20)]), mem: mem)
        b = good; b.segments[0].paddr = 0x1_0000_0000
        guard case .failure(.segmentOutsideRAM(segment: 0, _, _)) = loadELF(b.build(), mem) else {
            Issue.record("segment at 4 GiB accepted"); return
        }
        // Into the MMIO hole of a memory with a hole.
        let holed = try! GuestMemory(size: 64 << 20, holeStart: 32 << 20, holeEnd: 64 << 20)
        b = good; b.segments[1].paddr = (32 << 20) - 8
        guard case .failure(.segmentOutsideRAM(segment: 1, _, let ram)) = loadELF(b.build(), holed) else {
            Issue.record("segment across the hole accepted"); return
        }
        #expect(ram == [AddressRange(0, 32 << 20), AddressRange(64 << 20, 96 << 20)])
    }

    @Test func segmentBelowOneMiB() {
        var b = good; b.segments[1].paddr = 0xF_FFFF
        expectError(b, .segmentInReservedMemory(segment: 1, range: AddressRange(0xF_FFFF, 0x10_0063),
                                                reservedEnd: 0x10_0000))
    }

    @Test func overlappingSegments() {
        var b = good; b.segments[1].paddr = 0x20_2FFF  // segment 0 is [0x200000, 0x203000)
        expectError(b, .segmentsOverlap(first: 0, firstRange: AddressRange(0x20_0000, 0x20_3000),
                                        second: 1, secondRange: AddressRange(0x20_2FFF, 0x20_3063)))
        b = good; b.segments[1].paddr = 0x20_0000
        guard case .failure(.segmentsOverlap) = loadELF(b.build(), smallMemory()) else {
            Issue.record("identical segments accepted"); return
        }
        b = good; b.segments[1].paddr = 0x20_3000  // adjacent is fine
        #expect(throws: Never.self) { try loadELF(b.build(), smallMemory()).get() }
    }

    @Test func hugeSizes() {
        var b = good; b.segments[1].memsz = 1 << 63
        expectError(b, .segmentOutsideRAM(segment: 1, range: AddressRange(0x40_0000, 0x40_0000 + (1 << 63)),
                                          ram: [AddressRange(0, 64 << 20)]))
        b = good; b.segments[1].memsz = UInt64.max - 0x100
        expectError(b, .segmentAddressOverflow(segment: 1, address: 0x40_0000, size: UInt64.max - 0x100))
        b = good; b.segments[1].offset = UInt64.max - 10
        expectError(b, .segmentDataOutsideFile(segment: 1, offset: UInt64.max - 10, size: 100, fileSize: b.build().count))
        b = good; b.segments[1].filesz = UInt64.max; b.segments[1].memsz = UInt64.max
        guard case .failure(.segmentDataOutsideFile(segment: 1, _, _, _)) = loadELF(b.build(), smallMemory()) else {
            Issue.record("filesz 2^64-1 accepted"); return
        }
    }

    @Test func malformedNotes() {
        // namesz huge
        var notes = B.le(UInt32.max) + B.le(UInt32(8)) + B.le(UInt32(1)) + Array("PVMM\0\0\0\0".utf8)
        expectError(kernel(notes: notes), .malformedNote(segment: 2, offset: 0,
                                                         reason: "name (4294967295 bytes) runs past the segment end"))
        // descsz past the segment end
        notes = B.le(UInt32(5)) + B.le(UInt32(64)) + B.le(UInt32(1)) + Array("PVMM\0\0\0\0".utf8) + B.le(UInt64(0x20_0000))
        expectError(kernel(notes: notes), .malformedNote(segment: 2, offset: 0,
                                                         reason: "descriptor (64 bytes) runs past the segment end"))
        // trailing partial header after a good note
        expectError(kernel(notes: B.pvmmNote(0x20_0000) + [1, 2, 3, 4]),
                    .malformedNote(segment: 2, offset: 28, reason: "truncated note header"))
        // note segment data outside the file
        var b = good; b.segments[2].offset = 1 << 40
        guard case .failure(.segmentDataOutsideFile(segment: 2, _, _, _)) = loadELF(b.build(), smallMemory()) else {
            Issue.record("note outside file accepted"); return
        }
        // wrong descriptor sizes
        expectError(kernel(notes: B.noteBytes(name: Array("PVMM\0".utf8), type: 1, desc: [1, 2, 3, 4])),
                    .badEntryNote(name: "PVMM", descSize: 4))
        expectError(kernel(notes: B.noteBytes(name: Array("Xen\0".utf8), type: 18, desc: [1, 2])),
                    .badEntryNote(name: "Xen", descSize: 2))
        expectError(kernel(notes: B.pvhNote(0x1_0020_0000)), .pvhEntryAbove4GiB(0x1_0020_0000))
    }

    @Test func noEntryNote() {
        let b = kernel(notes: B.noteBytes(name: Array("Xen\0".utf8), type: 17, desc: B.le(UInt64(0x20_0000))))
        expectError(b, .noEntryNote(elfEntry: 0xFFFF_FFFF_8100_0000))
        expectError(kernel(notes: []), .noEntryNote(elfEntry: 0xFFFF_FFFF_8100_0000))
        // Name must match exactly, NUL included.
        expectError(kernel(notes: B.noteBytes(name: Array("PVMM".utf8), type: 1, desc: B.le(UInt64(0x20_0000)))),
                    .noEntryNote(elfEntry: 0xFFFF_FFFF_8100_0000))
        #expect(BootError.noEntryNote(elfEntry: 0x1000000).description.contains("0x1000000"))
    }

    @Test func entryOutsideSegments() {
        expectError(kernel(notes: B.pvmmNote(0x30_0000)), .entryOutsideImage(kind: .pvmm64, entry: 0x30_0000))
        // In bss: not file-backed.
        expectError(kernel(notes: B.pvhNote(0x20_0010)), .entryOutsideImage(kind: .pvh32, entry: 0x20_0010))
        expectError(kernel(notes: B.pvmmNote(0x40_0064)), .entryOutsideImage(kind: .pvmm64, entry: 0x40_0064))
    }

    @Test func nothingWrittenOnError() throws {
        let mem = smallMemory()
        _ = loadELF(kernel(notes: B.pvmmNote(0x30_0000)).build(), mem)
        #expect(try mem.readBytes(at: 0x20_0000, count: 5) == [0, 0, 0, 0, 0])
    }

    @Test func messagesCarryContext() {
        let e = BootError.segmentOutsideRAM(segment: 2, range: AddressRange(0x7F0_0000, 0x810_0000),
                                            ram: [AddressRange(0, 0x800_0000)])
        #expect(e.description == "segment 2 [0x7f00000-0x8100000) is outside guest RAM [0x0-0x8000000) (kernel too large or RAM too small?)")
        #expect(BootError.commandLineTooLong(length: 5000, max: 4095).description == "command line too long (5000 bytes, max 4095)")
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The fuzzer's seeds (Fuzz/ELFLoaderFuzz/seeds) must stay valid kernels, or fuzzing
/// only exercises the header checks.
@Test func fuzzSeedsLoad() throws {
    let dir = String(#filePath.dropLast("Tests/BootTests/ELFLoaderTests.swift".count)) + "Fuzz/ELFLoaderFuzz/seeds/"
    for name in ["pvmm", "pvh4", "both", "dyn"] {
        let bytes = try #require(readFile(dir + name + ".elf"), "cannot read seed \(name)")
        let mem = try GuestMemory(size: 16 << 20, holeStart: 8 << 20, holeEnd: 12 << 20)
        let r = loadELF(bytes, mem)
        #expect(throws: Never.self, "seed \(name)") { try r.get() }
    }
}

/// Found by the fuzzer: an all-bss segment whose p_offset lies past the end of the file.
@Test func bssSegmentWithOffsetPastEOF() throws {
    var b = kernel(notes: B.pvmmNote(0x20_0000))
    b.segments.append(ELFBuilder.Segment(type: 1, paddr: 0x50_0000, data: [], memsz: 0x1000, offset: 1 << 40))
    let mem = smallMemory()
    try mem.fill(0xCC, at: 0x50_0000, count: 0x1000)
    #expect(try loadELF(b.build(), mem).get().imageEnd == 0x50_1000)
    #expect(try mem.readBytes(at: 0x50_0000, count: 0x1000).allSatisfy { $0 == 0 })
}

/// Reads a whole file (no Foundation); nil when it does not exist.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n <= 0 { return out }
        out += chunk[0..<n]
    }
}

let pvosPath = String(#filePath.dropLast("Tests/BootTests/ELFLoaderTests.swift".count)) + "guests/pvos/build/pvos.elf"

/// The real guest, when guests/pvos/build.sh has been run: both of its notes parse.
@Test(.enabled(if: readFile(pvosPath) != nil, "pvos not built")) func pvosKernel() throws {
    let image = try #require(readFile(pvosPath))
    let mem = smallMemory()
    let k = try loadELF(image, mem).get()
    #expect(k.entryKind == .pvmm64 && k.imageStart == 0x10_0000)
    #expect(try loadELF(image, smallMemory(), prefer: false).get().entryKind == .pvh32)
    let (_, s) = try prepareKernel(image, mem, cmdline: Array("console=ttyS0".utf8))
    #expect(s.rip == k.entry)
}
