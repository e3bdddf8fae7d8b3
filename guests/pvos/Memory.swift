// Physical memory: 4 KiB pages handed out from free ranges (bump) plus a free list of
// returned blocks, and a small size-class heap on top for Embedded Swift's allocations.
// Pages are never touched until used: on PVM a first touch costs ~15 us.

@_extern(c, "pvos_range_table") func rangeTable() -> UnsafeMutablePointer<UInt64>
@_extern(c, "pvos_image_start") func imageStart() -> UInt64
@_extern(c, "pvos_image_end") func imageEnd() -> UInt64
@_extern(c, "pvos_invlpg") func invalidatePage(_ address: UInt64)

let pageSize: UInt64 = 4096

@inline(__always) func word(_ address: UInt64) -> UnsafeMutablePointer<UInt64> {
    UnsafeMutablePointer<UInt64>(bitPattern: UInt(address))!
}

/// Makes the identity map's leaf covering `address` uncached (PCD|PWT) in the current
/// tables: pvmm's map everything write-back, the PVH tables only the 3-4 GiB GiB
/// uncached. Device registers (the IOAPIC) must not be cached on real hardware.
func mapUncached(_ address: UInt64) {
    let frame: UInt64 = 0x000F_FFFF_FFFF_F000
    var table = readCR3() & frame
    for shift: UInt64 in [39, 30, 21, 12] {
        let entry = word(table + ((address >> shift) & 511) * 8)
        guard entry.pointee & 1 != 0 else { return }
        if shift == 12 || (shift < 39 && entry.pointee & 0x80 != 0) {   // a leaf
            if entry.pointee & 0x18 != 0x18 { entry.pointee |= 0x18; invalidatePage(address) }
            return
        }
        table = entry.pointee & frame
        guard table < BootLayout.minIdentityMap else { return }
    }
}

enum Pages {
    static let maxRanges = 64
    static var count = 0               // ranges are [start, end) pairs in rangeTable()
    static var freeList: UInt64 = 0    // returned blocks, linked through their first page
    static var totalRAM: UInt64 = 0    // bytes of type-1 RAM in the memory map
    static var freeBytes: UInt64 { var n: UInt64 = 0; let r = rangeTable(); for i in 0..<count { n += r[2 * i + 1] - r[2 * i] }; return n }

    static func addRAM(_ start: UInt64, _ length: UInt64) {
        totalRAM += length
        let s = max((start + pageSize - 1) & ~(pageSize - 1), BootLayout.reservedEnd)
        // Only the first 4 GiB are mapped by both entries' identity maps.
        let e = min((start &+ length) & ~(pageSize - 1), BootLayout.minIdentityMap)
        guard s < e, count < maxRanges else { return }
        let r = rangeTable()
        r[2 * count] = s
        r[2 * count + 1] = e
        count += 1
    }

    /// Removes [start, start+length) from every range, splitting where needed.
    static func exclude(_ start: UInt64, _ length: UInt64) {
        let s = start & ~(pageSize - 1)
        let e = (start + length + pageSize - 1) & ~(pageSize - 1)
        let r = rangeTable()
        var i = 0
        while i < count {
            let rs = r[2 * i], re = r[2 * i + 1]
            if e <= rs || s >= re { i += 1; continue }
            if s > rs && e < re && count < maxRanges {      // hole in the middle: split
                r[2 * count] = e
                r[2 * count + 1] = re
                count += 1
                r[2 * i + 1] = s
            } else if s > rs {
                r[2 * i + 1] = s
            } else if e < re {
                r[2 * i] = e
            } else {                                         // fully covered: drop
                r[2 * i] = r[2 * (count - 1)]
                r[2 * i + 1] = r[2 * (count - 1) + 1]
                count -= 1
                continue
            }
            i += 1
        }
    }

    /// `n` contiguous pages, or 0. First fit among returned blocks, then the ranges.
    static func allocate(_ n: UInt64 = 1) -> UInt64 {
        var previous: UInt64 = 0
        var block = freeList
        while block != 0 {
            let next = word(block).pointee
            let pages = word(block + 8)
            if pages.pointee == n {
                if previous == 0 { freeList = next } else { word(previous).pointee = next }
                return block
            }
            if pages.pointee > n {              // take the tail; the header stays put
                pages.pointee -= n
                return block + pages.pointee * pageSize
            }
            previous = block
            block = next
        }
        let r = rangeTable()
        for i in 0..<count where r[2 * i + 1] - r[2 * i] >= n * pageSize {
            let p = r[2 * i]
            r[2 * i] = p + n * pageSize
            return p
        }
        return 0
    }

    /// Returns a block to the address-ordered free list (its first page records
    /// {next, pages}), merging it with free neighbours against fragmentation.
    static func release(_ address: UInt64, _ n: UInt64 = 1) {
        var previous: UInt64 = 0
        var next = freeList
        while next != 0 && next < address { previous = next; next = word(next).pointee }
        var pages = n
        if next != 0 && address + pages * pageSize == next {
            pages += word(next + 8).pointee
            next = word(next).pointee
        }
        if previous != 0 && previous + word(previous + 8).pointee * pageSize == address {
            word(previous + 8).pointee += pages
            word(previous).pointee = next
            return
        }
        word(address).pointee = next
        word(address + 8).pointee = pages
        if previous == 0 { freeList = address } else { word(previous).pointee = address }
    }
}

/// Blocks of 32..2048 bytes from per-class free lists; bigger ones take whole pages.
/// A 16-byte header just below each returned pointer records {block start, tag}.
enum Heap {
    static let classes = 7                 // 32 << k
    static let bigTag: UInt64 = 1 << 32    // tag = bigTag | pages
    static var heads: UInt64 = 0           // page holding the class free-list heads

    static func initialize() {
        heads = Pages.allocate()
        if heads == 0 { outOfMemory() }
        for k in 0..<classes { word(heads + UInt64(k) * 8).pointee = 0 }
    }

    static func allocate(size: UInt64, alignment: UInt64) -> UInt64 {
        let align = max(alignment, 16)
        let total = size + 16 + (align - 16)
        var base: UInt64
        var tag: UInt64
        if total <= 2048 {
            var k = 0
            while (UInt64(32) << UInt64(k)) < total { k += 1 }
            let head = word(heads + UInt64(k) * 8)
            if head.pointee == 0 { refill(k, head) }
            base = head.pointee
            head.pointee = word(base).pointee
            tag = UInt64(k)
        } else {
            let n = (total + pageSize - 1) / pageSize
            base = Pages.allocate(n)
            if base == 0 { outOfMemory() }
            tag = bigTag | n
        }
        let user = (base + 16 + align - 1) & ~(align - 1)
        word(user - 16).pointee = base
        word(user - 8).pointee = tag
        return user
    }

    private static func refill(_ k: Int, _ head: UnsafeMutablePointer<UInt64>) {
        let page = Pages.allocate()
        if page == 0 { outOfMemory() }
        let size = UInt64(32) << UInt64(k)
        var p = page + pageSize - size
        while true {
            word(p).pointee = head.pointee
            head.pointee = p
            if p == page { break }
            p -= size
        }
    }

    static func release(_ user: UInt64) {
        let base = word(user - 16).pointee
        let tag = word(user - 8).pointee
        if tag & bigTag != 0 {
            Pages.release(base, tag & 0xFFFF_FFFF)
        } else {
            let head = word(heads + tag * 8)
            word(base).pointee = head.pointee
            head.pointee = base
        }
    }

    static func outOfMemory() -> Never {
        Console.freshLine()
        Console.write("pvos: out of memory\n")
        Platform.powerOff(ExitStatus.outOfMemory)
    }
}

@_cdecl("posix_memalign")
public func pvosPosixMemalign(_ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ alignment: Int, _ size: Int) -> Int32 {
    out.pointee = UnsafeMutableRawPointer(bitPattern: UInt(Heap.allocate(size: UInt64(size), alignment: UInt64(alignment))))
    return 0
}

// `free` itself is a jump in platform.S: Swift reserves the name.
@_cdecl("pvos_free")
public func pvosFree(_ pointer: UnsafeMutableRawPointer?) {
    if let p = pointer { Heap.release(UInt64(UInt(bitPattern: p))) }
}

extension Pages {
    /// `touch MIB`: stores a zero into every page of up to MIB of never-used RAM (still
    /// zero, so nothing changes for the allocator) and makes the host back each page: the
    /// jail's memory limit is tested with it (pvmm's JailTests).
    static func touchCommand(_ args: ArraySlice<[UInt8]>) {
        guard let a = args.first, let mib = Virtio.parseNumber(a[...]), mib >= 1 else {
            Console.write("usage: touch MIB\n")
            return
        }
        var left = mib << 20
        var done: UInt64 = 0
        let r = rangeTable()
        for i in 0..<count where left > 0 {
            var page = r[2 * i]
            while page < r[2 * i + 1] && left > 0 {
                word(page).pointee = 0
                page += pageSize
                left -= pageSize
                done += pageSize
            }
        }
        Console.write("touched ")
        Console.writeDecimal(done >> 20)
        Console.write(" MiB\n")
    }
}
