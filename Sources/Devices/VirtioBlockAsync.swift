#if canImport(Glibc)
import Glibc
#endif
import CURing
import GuestMemory
import Virtio

/// An io_uring for one virtio-blk device's host I/O, so requests that would block run
/// in parallel instead of one pread/pwrite at a time on the device thread. A read or
/// write is first tried with RWF_NOWAIT (a page-cache hit completes at once, as cheaply
/// as pread); what would block, and every flush, goes to the ring, submitted once per
/// batch; the kernel completes them in any order and signals the device's service
/// eventfd, whose handler collects the completions and updates the used ring on the
/// device thread (§2.7.8: used entries in any order).
///
/// `@unchecked Sendable`: every member is used only under the backend's lock
/// (`BackendState.state`), by the device thread or by a reset on a vCPU thread.
final class BlockRing: @unchecked Sendable {
    /// One request in flight.
    struct Slot {
        var request: BlockRequest?
        /// Data bytes the request moves (0 for a flush).
        var length = 0
        var offset: UInt64 = 0
        var vectors: UnsafeMutablePointer<iovec>?
        var vectorCapacity = 0
        /// The merged guest pieces, to redo the request synchronously after a short
        /// transfer or a retryable error.
        var pieces: [Buffer] = []
    }

    let ring: OpaquePointer
    private(set) var slots: [Slot]
    private var free: [Int]
    var inFlight: Int { slots.count - free.count }
    var hasRoom: Bool { !free.isEmpty }

    /// nil when the kernel refuses io_uring (disabled, seccomp): the device then runs
    /// requests synchronously.
    init?(slots count: Int, eventFD: Int32) {
        var r: OpaquePointer?
        guard curing_create(UInt32(count), &r) == 0, let r else { return nil }
        guard curing_register_eventfd(r, eventFD) == 0 else {
            curing_destroy(r)
            return nil
        }
        ring = r
        slots = [Slot](repeating: Slot(), count: count)
        free = Array((0..<count).reversed())
    }

    deinit {
        drain()
        curing_destroy(ring)
        for s in slots { s.vectors?.deallocate() }
    }

    /// What `start` did with a read or write.
    enum Started {
        /// Moved in full right away (a page-cache hit): complete it now.
        case done
        /// On the ring: it completes through `next()`.
        case queued
        /// Neither (no slot, a piece not in RAM, an error): run it synchronously.
        case fallback
    }

    /// Requests handed to the ring so far (tests, diagnostics).
    private(set) var queuedTotal: UInt64 = 0
    /// The file system refused RWF_NOWAIT for a write (EOPNOTSUPP): it cannot say
    /// whether a buffered write would block, so writes run inline (a buffered write
    /// lands in the page cache; handing each to an io_uring worker measured 2x slower).
    private(set) var inlineWrites = false

    /// A read (toGuest) or write of `pieces` (guest RAM, checked) at `offset`: first
    /// tried without blocking on the device thread (preadv2/pwritev2 RWF_NOWAIT: a
    /// page-cache hit costs what pread does), and only if that would block queued on
    /// the ring, so slow I/O runs in parallel and fast I/O pays nothing extra.
    func start(_ r: BlockRequest, pieces: [Buffer], length: Int, offset: UInt64, toGuest: Bool, fd: Int32,
               memory: GuestMemory) -> Started {
        guard let index = free.last else { return .fallback }
        if slots[index].vectorCapacity < pieces.count {
            slots[index].vectors?.deallocate()
            slots[index].vectorCapacity = max(pieces.count, 4)
            slots[index].vectors = .allocate(capacity: slots[index].vectorCapacity)
        }
        let vectors = slots[index].vectors!
        for (i, p) in pieces.enumerated() {
            guard let host = try? memory.hostPointer(at: p.addr, length: UInt64(p.len)) else { return .fallback }
            vectors[i] = iovec(iov_base: host, iov_len: Int(p.len))
        }
        let n = UInt32(pieces.count), tag = UInt64(index)
        if !toGuest && inlineWrites { return .fallback }
        let now = toGuest ? curing_preadv_nowait(fd, vectors, n, offset) : curing_pwritev_nowait(fd, vectors, n, offset)
        if now == length { return .done }
        if now == -Int(EOPNOTSUPP) && !toGuest { inlineWrites = true; return .fallback }
        // Would block, or moved part of it: the ring redoes the whole (idempotent) transfer.
        guard now >= 0 || now == -Int(EAGAIN) else { return .fallback }
        guard prepare({ curing_prep_rw(ring, toGuest ? 0 : 1, fd, vectors, n, offset, tag) }) else { return .fallback }
        slots[index].request = r
        slots[index].length = length
        slots[index].offset = offset
        slots[index].pieces = pieces
        free.removeLast()
        queuedTotal += 1
        return .queued
    }

    /// Queues a flush that waits for every request submitted before it (IOSQE_IO_DRAIN),
    /// so it covers every write the driver has seen completed and every one in flight.
    func startFlush(_ r: BlockRequest, fd: Int32) -> Bool {
        guard let index = free.last else { return false }
        guard prepare({ curing_prep_fdatasync_drained(self.ring, fd, UInt64(index)) }) else { return false }
        queuedTotal += 1
        slots[index].request = r
        slots[index].length = 0
        slots[index].pieces = []
        free.removeLast()
        return true
    }

    /// Runs a prep call; a full submission queue is submitted once and the prep retried.
    private func prepare(_ prep: () -> Int32) -> Bool {
        if prep() == 0 { return true }
        _ = curing_submit(ring)
        return prep() == 0
    }

    /// Submits everything queued (one system call for the batch).
    func submit() {
        while curing_submit(ring) == -EINTR {}
    }

    /// The next completion: the slot (freed; its contents stay readable until the next
    /// start) and the kernel's result. nil when none is waiting.
    func next() -> (slot: Slot, result: Int32)? {
        var tag: UInt64 = 0
        var result: Int32 = 0
        guard curing_peek(ring, &tag, &result) == 1 else { return nil }
        return take(tag, result)
    }

    /// Like `next`, but waits for a completion while requests are in flight.
    func nextWaiting() -> (slot: Slot, result: Int32)? {
        guard inFlight > 0 else { return next() }
        var tag: UInt64 = 0
        var result: Int32 = 0
        guard curing_wait(ring, &tag, &result) == 1 else { return nil }
        return take(tag, result)
    }

    private func take(_ tag: UInt64, _ result: Int32) -> (slot: Slot, result: Int32)? {
        let index = Int(tag)
        guard index < slots.count, slots[index].request != nil else { return nil }
        let s = slots[index]
        slots[index].request = nil
        free.append(index)
        return (s, result)
    }

    /// Waits for every request in flight and forgets them (reset, teardown): their data
    /// has landed (or failed) before the queues they belong to are dropped.
    func drain() {
        submit()
        while inFlight > 0 {
            var tag: UInt64 = 0
            var result: Int32 = 0
            guard curing_wait(ring, &tag, &result) == 1 else { return }
            _ = take(tag, result)
        }
    }
}

extension VirtioBlockBackend {
    /// The request loop of `SplitQueue.serve` (§2.7.14, notification suppression), with
    /// reads, writes and flushes handed to the ring instead of run in place: completions
    /// collected so far first, then every available chain validated and started, one
    /// submit for the batch, then the completions that are already there (page-cache
    /// hits complete inside the submit). Every other request, and every one that fails
    /// a check, completes at once as in `handle`. When every slot is busy the loop stops
    /// with notifications still off: the next completion serves the queue again.
    ///
    /// With EVENT_IDX the driver names the completion it waits for (used_event,
    /// §2.7.10); when a completion done here reaches it and more chains wait, the batch
    /// ends at once with the interrupt and `more` (served again right away) instead of
    /// after the last chain.
    /// A driver that sleeps until its first completion (a halted vCPU) then refills its
    /// ring while the device works through the rest; waiting for the batch's end drained
    /// the ring every batch (128 KiB reads at depth 8: 8 requests, one interrupt, an
    /// idle device while the guest refilled, one notification to wake it).
    func serveParallel(_ q: inout SplitQueue, features: VirtioFeatures, ring: BlockRing) -> ServeResult {
        var result = ServeResult()
        do throws(DeviceFault) {
            try collect(&q, ring: ring, into: &result)
            pop: while true {
                try vq { () throws(VirtqueueError) in try q.disableNotifications() }
                while true {
                    guard ring.hasRoom else { break pop }
                    guard let head = try vq({ () throws(VirtqueueError) in try q.popAvailable() }) else { break }
                    let chain = try vq { () throws(VirtqueueError) in try q.chain(head: head) }
                    if let len = try start(chain, features: features, ring: ring) {
                        try vq { () throws(VirtqueueError) in try q.addUsed(head: head, len: len) }
                        result.requests += 1
                        // Only with more chains waiting behind it: else the batch's own end
                        // (notifications back on, then the interrupt) comes as soon.
                        if q.eventIdx, try vq({ () throws(VirtqueueError) in try q.availIndex() }) != q.nextAvail,
                           try vq({ () throws(VirtqueueError) in try q.needsNotification() }) {
                            (result.interrupt, result.more) = (true, true)
                            break pop
                        }
                    }
                }
                if !(try vq { () throws(VirtqueueError) in try q.enableNotifications() }) { break }
            }
            ring.submit()
            try collect(&q, ring: ring, into: &result)
            if result.requests > 0, try vq({ () throws(VirtqueueError) in try q.needsNotification() }) {
                result.interrupt = true
            }
        } catch {
            ring.submit()  // what was queued still runs; drain() at reset waits for it
            result.fault = error
            result.interrupt = result.requests > 0
        }
        return result
    }

    /// Starts one chain: nil when it went to the ring, else its used.len (completed here).
    func start(_ chain: DescriptorChain, features: VirtioFeatures, ring: BlockRing) throws(DeviceFault) -> UInt32? {
        let r = try parse(chain)
        let memory = chain.memory
        switch r.type {
        case VirtioBlk.typeIn, VirtioBlk.typeOut:
            let toGuest = r.type == VirtioBlk.typeIn
            let buffers = toGuest ? r.output : r.input
            let length = Self.total(buffers)
            // The same checks as `execute`; a request that fails them completes there.
            guard toGuest || !disk.readOnly, let offset = range(sector: r.sector, length: length), length > 0 else { break }
            switch ring.start(r, pieces: Self.merged(buffers), length: Int(length), offset: offset, toGuest: toGuest,
                              fd: disk.fd, memory: memory) {
            case .queued: return nil
            case .done: return try finish(r, status: VirtioBlk.statusOK, written: toGuest ? Int(length) : 0, memory: memory)
            case .fallback: break
            }
        case VirtioBlk.typeFlush:
            if ring.startFlush(r, fd: disk.fd) { return nil }
        default:
            break
        }
        let (status, written) = execute(type: r.type, sector: r.sector, input: r.input, output: r.output,
                                        memory: memory, features: features)
        return try finish(r, status: status, written: written, memory: memory)
    }

    /// Returns every completed request to the driver: status byte, then the used entry.
    /// Anything but a whole transfer (short, EAGAIN, EINTR, an error) is redone
    /// synchronously, so the guest sees exactly the synchronous path's outcome.
    /// With `waitAll` (a snapshot settling the device), until nothing is in flight.
    func collect(_ q: inout SplitQueue, ring: BlockRing, into result: inout ServeResult, waitAll: Bool = false) throws(DeviceFault) {
        let memory = q.memory
        while let (slot, res) = waitAll ? ring.nextWaiting() : ring.next() {
            guard let r = slot.request else { continue }
            let toGuest = r.type == VirtioBlk.typeIn
            var status = VirtioBlk.statusOK
            var written = 0
            if r.type == VirtioBlk.typeFlush {
                if res != 0 { status = disk.sync() ? VirtioBlk.statusOK : VirtioBlk.statusIOErr }
            } else if Int(res) == slot.length {
                written = toGuest ? slot.length : 0
            } else {
                let (ok, done) = transfer(slot.pieces, memory: memory, at: slot.offset, toGuest: toGuest)
                status = ok ? VirtioBlk.statusOK : VirtioBlk.statusIOErr
                written = toGuest ? done : 0
            }
            let len = try finish(r, status: status, written: written, memory: memory)
            try vq { () throws(VirtqueueError) in try q.addUsed(head: r.head, len: len) }
            result.requests += 1
        }
    }
}
