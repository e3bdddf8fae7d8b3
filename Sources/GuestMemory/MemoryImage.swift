#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

extension GuestMemory {
    /// Writes RAM to `fd` as a sparse image of `size` bytes (mapping order: what
    /// `init(file:)` maps back): the file is sized first, then only pages that hold a
    /// non-zero byte are written, in runs, so untouched and zeroed pages stay holes
    /// (SEEK_HOLE finds them, they cost no disk and no page cache on restore).
    ///
    /// Pages the host never populated are not even read (mincore: reading a hole of
    /// shared memory would allocate it). A private file mapping (a restored VM) is
    /// scanned whole: its untouched pages come from the file it was restored from.
    /// Returns the bytes written. The vCPUs must be parked (a consistent image).
    public func writeImage(to fd: Int32) throws(GuestMemoryError) -> UInt64 {
        guard ftruncate(fd, off_t(size)) == 0 else { throw .imageWrite(Errno(rawValue: errno)) }
        let page = Int(Self.pageSize)
        let pages = Int(size) / page
        var resident = [UInt8](repeating: 1, count: pages)
        if !fileBacked {
            if mincore(base, Int(size), &resident) != 0 { for i in resident.indices { resident[i] = 1 } }
        }
        var written: UInt64 = 0
        var runStart = -1
        func flush(_ end: Int) throws(GuestMemoryError) {
            guard runStart >= 0 else { return }
            var off = runStart * page
            let stop = end * page
            while off < stop {
                let n = pwrite(fd, base + off, stop - off, off_t(off))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .imageWrite(Errno(rawValue: errno))
                }
                off += n
            }
            written += UInt64((end - runStart) * page)
            runStart = -1
        }
        for i in 0..<pages {
            let data = resident[i] & 1 != 0 && !Self.isZero(base + i * page, page)
            if data {
                if runStart < 0 { runStart = i }
            } else {
                try flush(i)
            }
        }
        try flush(pages)
        return written
    }

    /// Whether `count` bytes (a multiple of 8) at `p` are all zero.
    static func isZero(_ p: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        let words = UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt64.self), count: count / 8)
        var acc: UInt64 = 0
        for (i, w) in words.enumerated() {
            acc |= w
            if i & 63 == 63 && acc != 0 { return false }
        }
        return acc == 0
    }
}
