#if canImport(Glibc)
import Glibc
#endif
import GuestMemory

/// A reusable list of iovecs pointing into guest memory, so a device moves a frame with
/// one readv/writev between a host fd and the guest's buffers: no copy, and no allocation
/// per frame (the storage is allocated once, for `capacity` entries).
///
/// Filled from validated chains (`SplitQueue.collect`), whose buffers were checked to lie
/// in RAM; the host pointers come from `GuestMemory.hostPointer`, so nothing here does
/// pointer arithmetic on guest addresses. Owned by one device thread.
public final class IOVecList: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the device thread); the pointers point
    // into guest RAM, which the guest may rewrite at any time anyway.
    public let capacity: Int
    let storage: UnsafeMutablePointer<iovec>
    public private(set) var count = 0
    /// Sum of the iovec lengths.
    public private(set) var totalLength = 0
    /// Index of the first entry. Storage slot 0 is kept free so `prepend` always has room
    /// for one entry (a header the device rewrote in its own buffer).
    private var offset = 1

    public init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity + 1)
    }

    deinit { storage.deallocate() }

    public func removeAll() {
        count = 0
        totalLength = 0
        offset = 1
    }

    /// Puts `bytes` (host memory the caller keeps alive until the I/O is done) in front:
    /// once after `removeAll` (slot 0 is kept for it), more only after `dropFirst`.
    public func prepend(_ bytes: UnsafeMutableRawBufferPointer) {
        precondition(offset > 0, "IOVecList.prepend without a free front slot")
        offset -= 1
        storage[offset] = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
        count += 1
        totalLength += bytes.count
    }

    /// The list's state, to undo a `dropFirst` with `restore`.
    public struct Mark {
        let offset: Int, count: Int, totalLength: Int
        let first: iovec
    }

    public func mark() -> Mark {
        Mark(offset: offset, count: count, totalLength: totalLength, first: count > 0 ? storage[offset] : iovec())
    }

    public func restore(_ m: Mark) {
        offset = m.offset
        count = m.count
        totalLength = m.totalLength
        if m.count > 0 { storage[offset] = m.first }
    }

    /// Adds guest buffer `b`. Throws when the list is full (a chain with more pieces than
    /// the device allows) or the buffer is not in RAM.
    public func append(_ b: Buffer, memory: GuestMemory) throws(VirtqueueError) {
        guard offset + count <= capacity else { throw .chainTooLong(head: 0, limit: UInt16(clamping: capacity)) }
        let p: UnsafeMutableRawPointer
        do { p = try memory.hostPointer(at: b.addr, length: UInt64(b.len)) } catch { throw .memory(error) }
        storage[offset + count] = iovec(iov_base: p, iov_len: Int(b.len))
        count += 1
        totalLength += Int(b.len)
    }

    /// Adds host memory at the end (a device's overflow buffer: a frame longer than the
    /// guest's buffers spills there, so the read's length shows it was too long whatever
    /// the host fd does with a short iovec). Returns false when the list is full.
    @discardableResult
    public func appendHost(_ bytes: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset + count <= capacity else { return false }
        storage[offset + count] = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
        count += 1
        totalLength += bytes.count
        return true
    }

    /// The entries, for readv/writev.
    public var vectors: UnsafeBufferPointer<iovec> { UnsafeBufferPointer(start: storage + offset, count: count) }

    /// Removes the first `n` bytes (e.g. a header the device handles itself); an entry cut
    /// in the middle is shortened in place.
    public func dropFirst(_ n: Int) {
        var left = min(n, totalLength)
        totalLength -= left
        while left > 0 {
            let v = storage[offset]
            if v.iov_len <= left {
                left -= v.iov_len
                offset += 1
                count -= 1
            } else {
                storage[offset] = iovec(iov_base: v.iov_base! + left, iov_len: v.iov_len - left)
                left = 0
            }
        }
    }

    /// Copies `bytes` to byte offset `at` of the list (a header field inside the frame);
    /// returns false when they do not fit.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer, at: Int) -> Bool {
        pieces(at: at, count: bytes.count) { p, done, n in p.copyMemory(from: bytes.baseAddress! + done, byteCount: n) }
    }

    /// Copies bytes [at, at + into.count) of the list out; returns false when the list is
    /// shorter.
    @discardableResult
    public func read(into: UnsafeMutableRawBufferPointer, at: Int) -> Bool {
        pieces(at: at, count: into.count) { p, done, n in (into.baseAddress! + done).copyMemory(from: p, byteCount: n) }
    }

    /// Calls `body(pointer, progress, length)` for the pieces of bytes [at, at + count).
    private func pieces(at: Int, count: Int, _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) -> Bool {
        guard at >= 0, at + count <= totalLength else { return false }
        var skip = at
        var done = 0
        var i = offset
        while done < count {
            let v = storage[i]
            i += 1
            if skip >= v.iov_len { skip -= v.iov_len; continue }
            let piece = min(v.iov_len - skip, count - done)
            body(v.iov_base! + skip, done, piece)
            done += piece
            skip = 0
        }
        return true
    }
}
