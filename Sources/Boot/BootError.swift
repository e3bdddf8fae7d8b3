import GuestMemory

/// A half-open guest-physical range [start, end), for error messages.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    public let start: UInt64
    public let end: UInt64
    public init(_ start: UInt64, _ end: UInt64) { self.start = start; self.end = end }
    public var description: String { "[\(hex(start))-\(hex(end)))" }
}

@inline(__always) func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

/// Why a kernel could not be loaded or the boot state could not be built. Every case
/// carries the numbers needed to fix the image or the configuration.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    case fileTooSmall(size: Int)
    case notELF
    case notELF64(elfClass: UInt8)
    case notLittleEndian(encoding: UInt8)
    case badELFVersion(UInt32)
    case notX86_64(machine: UInt16)
    case notExecutable(type: UInt16)
    case badProgramHeaderSize(UInt16)
    case badProgramHeaderCount(UInt16)
    case programHeadersOutsideFile(offset: UInt64, count: Int, fileSize: Int)
    case segmentDataOutsideFile(segment: Int, offset: UInt64, size: UInt64, fileSize: Int)
    case segmentFileSizeExceedsMemorySize(segment: Int, fileSize: UInt64, memorySize: UInt64)
    case segmentAddressOverflow(segment: Int, address: UInt64, size: UInt64)
    case segmentInReservedMemory(segment: Int, range: AddressRange, reservedEnd: UInt64)
    case segmentOutsideRAM(segment: Int, range: AddressRange, ram: [AddressRange])
    case segmentsOverlap(first: Int, firstRange: AddressRange, second: Int, secondRange: AddressRange)
    case noLoadableSegment
    case malformedNote(segment: Int, offset: UInt64, reason: String)
    case badEntryNote(name: String, descSize: UInt32)
    case pvhEntryAbove4GiB(UInt64)
    case noEntryNote(elfEntry: UInt64)
    case entryOutsideImage(kind: EntryKind, entry: UInt64)
    case commandLineTooLong(length: Int, max: Int)
    case commandLineContainsNUL(offset: Int)
    case tooManyMemoryMapEntries(count: Int, max: Int)
    case identityMapTooLarge(end: UInt64, max: UInt64)
    /// The initrd does not fit page-aligned between the kernel's end and the top of the
    /// RAM below 4 GiB; `neededMiB` is the guest RAM that would hold it.
    case initrdDoesNotFit(size: UInt64, kernelEnd: UInt64, ramTop: UInt64, neededMiB: UInt64)
    /// A boot structure did not fit in guest RAM (RAM too small for the fixed layout).
    case guestMemory(what: String, GuestMemoryError)

    public var description: String {
        switch self {
        case .fileTooSmall(let n):
            return "kernel file is \(n) bytes, shorter than an ELF64 header (64 bytes)"
        case .notELF:
            return "not an ELF file (no \\x7fELF magic)"
        case .notELF64(let c):
            return "not an ELF64 x86-64 file: EI_CLASS is \(c)\(c == 1 ? " (ELF32)" : ""), need 2 (ELF64)"
        case .notLittleEndian(let d):
            return "not an ELF64 x86-64 file: EI_DATA is \(d), need 1 (little-endian)"
        case .badELFVersion(let v):
            return "unsupported ELF version \(v), need 1"
        case .notX86_64(let m):
            return "not an ELF64 x86-64 file: e_machine is \(m), need 62 (EM_X86_64)"
        case .notExecutable(let t):
            return "ELF e_type is \(t), need 2 (ET_EXEC) or 3 (ET_DYN, loaded unrelocated at its p_paddr)"
        case .badProgramHeaderSize(let s):
            return "e_phentsize is \(s), need 56 (Elf64_Phdr)"
        case .badProgramHeaderCount(let n):
            return "e_phnum is \(n): need 1...65534 program headers (PN_XNUM extended numbering is not supported)"
        case .programHeadersOutsideFile(let off, let n, let size):
            return "program header table (offset \(hex(off)), \(n) x 56 bytes) extends past the end of the \(size)-byte file"
        case .segmentDataOutsideFile(let i, let off, let size, let fsize):
            return "segment \(i) file data [\(hex(off)), +\(hex(size))) extends past the end of the \(fsize)-byte file (truncated kernel?)"
        case .segmentFileSizeExceedsMemorySize(let i, let f, let m):
            return "segment \(i) has p_filesz \(hex(f)) > p_memsz \(hex(m))"
        case .segmentAddressOverflow(let i, let a, let s):
            return "segment \(i) p_paddr \(hex(a)) + p_memsz \(hex(s)) overflows 64 bits"
        case .segmentInReservedMemory(let i, let r, let end):
            return "segment \(i) \(r) starts below \(hex(end)): pvmm keeps its boot tables in [0x0-\(hex(end))); link the kernel at >= 1 MiB"
        case .segmentOutsideRAM(let i, let r, let ram):
            let rs = ram.map(\.description).joined(separator: " and ")
            return "segment \(i) \(r) is outside guest RAM \(rs) (kernel too large or RAM too small?)"
        case .segmentsOverlap(let a, let ra, let b, let rb):
            return "segments \(a) \(ra) and \(b) \(rb) overlap"
        case .noLoadableSegment:
            return "no loadable segment (no PT_LOAD with p_memsz > 0)"
        case .malformedNote(let i, let off, let why):
            return "malformed note in PT_NOTE segment \(i) at segment offset \(hex(off)): \(why)"
        case .badEntryNote(let name, let n):
            return name == "Xen"
                ? "Xen PHYS32_ENTRY note has a \(n)-byte descriptor, need 4 or 8"
                : "\(name) entry note has a \(n)-byte descriptor, need 8"
        case .pvhEntryAbove4GiB(let e):
            return "PVH entry \(hex(e)) is not a 32-bit physical address"
        case .noEntryNote(let e):
            return "no PVH (Xen PHYS32_ENTRY, type 18) or PVMM (type 1) entry note; the ELF e_entry \(hex(e)) "
                + "is not used because nothing says which CPU mode or boot structure it expects "
                + "(Linux's e_entry wants a Linux boot_params, not hvm_start_info); build the kernel with "
                + "CONFIG_PVH=y or add a PVMM note"
        case .entryOutsideImage(let k, let e):
            return "\(k == .pvmm64 ? "PVMM" : "PVH") entry \(hex(e)) is not inside the file-backed bytes of any loaded segment"
        case .commandLineTooLong(let n, let max):
            return "command line too long (\(n) bytes, max \(max))"
        case .commandLineContainsNUL(let off):
            return "command line contains a NUL byte at offset \(off)"
        case .tooManyMemoryMapEntries(let n, let max):
            return "memory map needs \(n) entries, the start-info page holds \(max)"
        case .identityMapTooLarge(let end, let max):
            return "the 64-bit entry's page tables identity-map at most \(hex(max)) bytes; guest RAM ends at \(hex(end))"
        case let .initrdDoesNotFit(size, kernelEnd, ramTop, needed):
            return "\(size) bytes do not fit in guest RAM between the kernel's end \(hex(kernelEnd)) and \(hex(ramTop)): the VM needs at least \(needed) MiB of memory"
        case .guestMemory(let what, let e):
            return "guest RAM too small for \(what): \(e)"
        }
    }
}
