import GuestMemory
import Synchronization
import Virtio

/// What a backend keeps under its lock: the queues handed over at DRIVER_OK.
struct BackendQueues {
    var queues: [SplitQueue?] = []
    var features: VirtioFeatures = []
    var active = false
    /// Set on a DeviceFault or DEVICE_NEEDS_RESET: no queue is touched until reset.
    var halted = false
    /// While the device thread polls (PollPhase): each polled queue's avail.idx when last
    /// looked at. Its notifications stay off after every batch until the poll ends.
    var polled: [Int: UInt16] = [:]

    /// Runs `body` on queue `index` if it is served, storing its cursors back.
    mutating func serve(_ index: Int, _ body: (inout SplitQueue, VirtioFeatures) -> ServeResult) -> ServeResult {
        guard active, !halted, index >= 0, index < queues.count, var q = queues[index] else { return ServeResult() }
        var r = body(&q, features)
        if r.fault == nil, polled[index] != nil {
            do { try q.suppressNotifications() } catch { r.fault = .queue(error) }
        }
        queues[index] = q
        if r.fault != nil {
            halted = true
            r.faultQueue = index
        }
        return r
    }
}

/// The result of draining one queue.
struct ServeResult {
    var requests = 0
    var interrupt = false
    var fault: DeviceFault?
    /// The queue `fault` happened on (logs name it).
    var faultQueue: Int?
    /// Ended early for `interrupt`; work may be left (BackendOutcome.more).
    var more = false

    mutating func merge(_ other: ServeResult) {
        requests += other.requests
        interrupt = interrupt || other.interrupt
        if fault == nil { (fault, faultQueue) = (other.fault, other.faultQueue) }
    }

    /// "queue 1: chain 3 loops: ..." for the DEVICE_NEEDS_RESET log line.
    var failure: String? {
        fault.map { f in (faultQueue.map { "queue \($0): " } ?? "") + f.description }
    }
}

/// Runs a queue operation, turning its VirtqueueError into a DeviceFault.
@inline(__always)
func vq<T>(_ body: () throws(VirtqueueError) -> T) throws(DeviceFault) -> T {
    do { return try body() } catch { throw .queue(error) }
}

extension SplitQueue {
    /// The request loop of §2.7.14 with notification suppression: disable notifications,
    /// pop and validate every available chain, handle it, return it; re-enable and
    /// re-check (a buffer made available while notifications were off must not be
    /// missed). Then one used-buffer notification decision for the whole batch
    /// (§2.7.7: EVENT_IDX used_event, or VIRTQ_AVAIL_F_NO_INTERRUPT).
    ///
    /// `handle` returns the bytes it wrote to the chain's device-writable buffers. On a
    /// fault the loop stops at once; chains already returned stay returned.
    mutating func serve(_ handle: (DescriptorChain) throws(DeviceFault) -> UInt32) -> ServeResult {
        var result = ServeResult()
        do throws(DeviceFault) {
            while true {
                try vq { () throws(VirtqueueError) in try disableNotifications() }
                while let head = try vq({ () throws(VirtqueueError) in try popAvailable() }) {
                    let chain = try vq { () throws(VirtqueueError) in try self.chain(head: head) }
                    let len = try handle(chain)
                    try vq { () throws(VirtqueueError) in try writeUsed(head: head, len: len) }
                    result.requests += 1
                }
                if !(try vq { () throws(VirtqueueError) in try enableNotifications() }) { break }
            }
            // One release fence and one used.idx store for the whole batch.
            try vq { () throws(VirtqueueError) in try publishUsed() }
            if result.requests > 0 {
                result.interrupt = try vq { () throws(VirtqueueError) in try needsNotification() }
            }
        } catch {
            result.fault = error
            // The driver still gets the chains that completed before the fault.
            try? publishUsed()
            result.interrupt = result.requests > 0
        }
        return result
    }
}

/// The lock, epoch and halt logic both backends share.
final class BackendState: Sendable {
    let state = Mutex(BackendQueues())
    private let epochValue = Atomic<UInt64>(0)

    var epoch: UInt64 { epochValue.load(ordering: .acquiring) }

    func activate(_ queues: [SplitQueue?], features: VirtioFeatures) {
        state.withLock { s in
            s = BackendQueues(queues: queues, features: features, active: true, halted: false, polled: [:])
            epochValue.wrappingAdd(1, ordering: .releasing)
        }
    }

    /// Drops the queues. Waits for an in-flight batch (it holds the lock); `quiesce` runs
    /// under the lock first (the block backend waits for host I/O in flight there).
    func reset(_ quiesce: () -> Void = {}) {
        state.withLock { s in
            quiesce()
            s = BackendQueues()
            epochValue.wrappingAdd(1, ordering: .releasing)
        }
    }

    func halt() {
        state.withLock { $0.halted = true }
    }

    /// One step of adaptive polling over `queues` (the driver-to-device queues whose new
    /// buffers are work: a receive queue's posted buffers are not). `.begin` turns their
    /// notifications off; `.check` is true when a driver index moved since the last look;
    /// `.end` turns notifications back on and is true when buffers arrived meanwhile (the
    /// §2.7.14 re-check). A guest fault found here leaves the queue to the next batch.
    func poll(_ phase: PollPhase, queues indices: [Int]) -> Bool {
        state.withLock { s -> Bool in
            guard s.active, !s.halted else { s.polled = [:]; return false }
            var moved = false
            for i in indices where i < s.queues.count {
                guard let q = s.queues[i] else { continue }
                switch phase {
                case .begin:
                    guard (try? q.suppressNotifications()) != nil, let idx = try? q.availIndex() else { continue }
                    s.polled[i] = idx
                case .check:
                    guard let seen = s.polled[i], let idx = try? q.availIndex(), idx != seen else { continue }
                    s.polled[i] = idx
                    moved = true
                case .end:
                    s.polled[i] = nil
                    var copy = q
                    if (try? copy.enableNotifications()) ?? false { moved = true }
                    s.queues[i] = copy
                }
            }
            return moved
        }
    }

    /// Cursors of the queues in service; none before DRIVER_OK.
    func cursors() -> [SplitQueue.Cursors?] {
        state.withLock { s in s.active ? s.queues.map { $0?.cursors } : [] }
    }

    /// Runs one batch under the lock. The outcome carries the epoch it ran in (read under
    /// the same lock that activate and reset hold while changing it).
    func batch(_ body: (inout BackendQueues) -> ServeResult) -> BackendOutcome {
        state.withLock { s -> BackendOutcome in
            let epoch = epochValue.load(ordering: .relaxed)
            guard s.active, !s.halted else { return BackendOutcome(epoch: epoch) }
            let r = body(&s)
            return BackendOutcome(epoch: epoch, requests: r.requests, interrupt: r.interrupt,
                                  failure: r.failure, more: r.more && r.fault == nil)
        }
    }
}
