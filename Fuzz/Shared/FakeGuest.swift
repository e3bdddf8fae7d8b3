// The fake guest the virtqueue and virtio-blk fuzz harnesses share: 64 KiB of RAM in two
// regions, [0, 32K) and [48K, 80K), so region checks are exercised; input bytes land at
// 0x1000 (descriptor table, available ring, buffers) and stop short of the used ring at
// 0x7000. Each harness snapshots all of RAM before and after a run and checks what
// changed. Compiled into each harness by Scripts/fuzz-virtqueue and Scripts/fuzz-blk.
#if canImport(Glibc)
import Glibc
#endif
import GuestMemory

let memory = try! GuestMemory(size: 64 << 10, holeStart: 32 << 10, holeEnd: 48 << 10)
let descBase: UInt64 = 0x1000
let usedBase: UInt64 = 0x7000
let inputCap = 0x6000
nonisolated(unsafe) var before = [UInt8](repeating: 0, count: 64 << 10)
nonisolated(unsafe) var after = [UInt8](repeating: 0, count: 64 << 10)

/// All of RAM as bytes (low region then high region).
func snapshot(into out: inout [UInt8]) {
    out.withUnsafeMutableBytes { p in
        try! memory.read(into: UnsafeMutableRawBufferPointer(rebasing: p[0..<(32 << 10)]), at: 0)
        try! memory.read(into: UnsafeMutableRawBufferPointer(rebasing: p[(32 << 10)...]), at: 48 << 10)
    }
}

/// Guest address of snapshot offset `i`.
func guestAddress(_ i: Int) -> UInt64 { i < (32 << 10) ? UInt64(i) : UInt64(i) + (16 << 10) }

/// Calls `body(guestAddress)` for every RAM byte that differs from `before`. Compares
/// 1 KiB chunks with memcmp first: almost all of RAM is unchanged.
func forEachChangedByte(_ body: (UInt64) -> Void) {
    snapshot(into: &after)
    let chunk = 1024
    for start in stride(from: 0, to: after.count, by: chunk) {
        let same = before.withUnsafeBytes { b in
            after.withUnsafeBytes { a in memcmp(b.baseAddress! + start, a.baseAddress! + start, chunk) == 0 }
        }
        if same { continue }
        for i in start..<start + chunk where after[i] != before[i] { body(guestAddress(i)) }
    }
}
