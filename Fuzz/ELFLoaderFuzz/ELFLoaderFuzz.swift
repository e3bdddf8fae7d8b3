// libFuzzer entry for the kernel loader: arbitrary bytes must yield a BootError or a
// LoadedKernel, never a trap, a sanitizer report, a hang or a huge allocation.
// Built and run by Scripts/fuzz-elf.
import Boot
import GuestMemory
import PVMMABI

// 16 MiB with a hole at 8-12 MiB: two RAM regions, so region checks are exercised too.
nonisolated(unsafe) let memory = try! GuestMemory(size: 16 << 20, holeStart: 8 << 20, holeEnd: 12 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzELF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let file = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let prefer = size % 2 == 0
    do {
        let (k, s) = try BootBuilder.prepare(kernel: file, mem: memory, cmdline: Array("console=ttyS0".utf8),
                                             preferPVMMEntry: prefer)
        // Invariants of a successful load.
        precondition(k.imageStart >= BootLayout.reservedEnd && k.imageStart < k.imageEnd)
        precondition(k.entry >= k.imageStart && k.entry < k.imageEnd && s.rip == k.entry)
        precondition(memory.contains(k.imageStart, length: 1) && memory.contains(k.imageEnd - 1, length: 1))
        precondition(k.entryKind == .pvmm64 || k.entry <= UInt32.max)
    } catch {
        _ = error.description  // every message must format without trapping
    }
    return 0
}
