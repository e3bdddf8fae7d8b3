// libFuzzer entry for the kernel loader: arbitrary bytes must yield a BootError or a
// LoadedKernel, never a trap, a sanitizer report, a hang or a huge allocation.
// Built and run by Scripts/fuzz-elf.
//
// The input is an ELF file followed by an 8-byte trailer that picks what the VMM would
// otherwise fix: the guest RAM layout, the command line's length and the RSDP address,
// so their limits are fuzzed too (make-seeds.py appends a trailer to every seed).
import Boot
import GuestMemory
import PVMMABI

/// Layouts a VM can have: two regions around a hole, one small region, RAM that ends
/// just past the loader's reserved low memory.
nonisolated(unsafe) let memories: [GuestMemory] = [
    try! GuestMemory(size: 16 << 20, holeStart: 8 << 20, holeEnd: 12 << 20),
    try! GuestMemory(size: 4 << 20, holeStart: 64 << 20, holeEnd: 65 << 20),
    try! GuestMemory(size: BootLayout.reservedEnd + 0x1000, holeStart: 64 << 20, holeEnd: 65 << 20),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzELF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    var trailer = [UInt8](repeating: 0, count: 8)
    var file = all
    if all.count >= 8 {
        trailer = Array(all[(all.count - 8)...])
        file = UnsafeRawBufferPointer(rebasing: all[..<(all.count - 8)])
    }
    let memory = memories[Int(trailer[0] & 0x7F) % memories.count]
    let prefer = trailer[0] & 0x80 == 0
    // Up to twice the start info's limit: an over-long line must be refused, not written.
    let cmdlineLength = (Int(trailer[1]) | Int(trailer[2]) << 8) % (2 * BootLayout.cmdlineMax + 1)
    let cmdline = [UInt8](repeating: UInt8(ascii: "a"), count: cmdlineLength)
    let rsdp = UInt64(trailer[3]) | UInt64(trailer[4]) << 8 | UInt64(trailer[5]) << 16 | UInt64(trailer[6]) << 24
        | UInt64(trailer[7]) << 56
    do {
        let (k, s) = try BootBuilder.prepare(kernel: file, mem: memory, cmdline: cmdline, rsdp: rsdp, preferPVMMEntry: prefer)
        // Invariants of a successful load.
        precondition(k.imageStart >= BootLayout.reservedEnd && k.imageStart < k.imageEnd)
        precondition(k.entry >= k.imageStart && k.entry < k.imageEnd && s.rip == k.entry)
        precondition(memory.contains(k.imageStart, length: 1) && memory.contains(k.imageEnd - 1, length: 1))
        precondition(k.entryKind == .pvmm64 || k.entry <= UInt32.max)
        precondition(cmdline.count < BootLayout.cmdlineMax, "a command line longer than the start info holds was accepted")
        // The VMM picks its interrupt delivery by this before loading: it must agree.
        precondition((try? ELFLoader.entry(of: file, preferPVMMEntry: prefer)) == k.entryKind)
    } catch {
        _ = error.description  // every message must format without trapping
    }
    return 0
}
