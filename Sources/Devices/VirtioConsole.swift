import GuestMemory
import Synchronization
import Virtio

/// virtio-console (virtio 1.2 §5.3) constants.
public enum VirtioCon {
    /// Port 0's queues (§5.3.2); without MULTIPORT there are no others.
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let queueSize: UInt16 = 256
    /// struct virtio_console_config: cols u16, rows u16, max_nr_ports u32, emerg_wr u32.
    public static let configSize = 12
    static let emergencyWriteOffset = 8
    /// Host input held while the guest has no receive buffer posted. When full, the
    /// feeder is told to retry (back-pressure), so nothing is dropped.
    public static let pendingCapacity = 16 << 10
}

/// The virtio-console model: one port, no MULTIPORT, no SIZE (§5.3.3); EMERG_WRITE lets
/// a driver print before its queues exist (one exit per byte, like the 8250).
public struct VirtioConsoleModel: VirtioBackedModel, Sendable {
    public let backend: VirtioConsoleBackend

    public init(backend: VirtioConsoleBackend) { self.backend = backend }

    public var deviceType: VirtioDeviceType { .console }
    public var deviceFeatures: VirtioFeatures { [.ringEventIdx, .indirectDesc, .consoleEmergencyWrite] }
    public var queueMaxSizes: [UInt16] { [VirtioCon.queueSize, VirtioCon.queueSize] }
    public var configSize: Int { VirtioCon.configSize }

    /// cols and rows 0 (SIZE not offered), max_nr_ports 1, emerg_wr reads as 0.
    public mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = offset + i == 4 ? 1 : 0 }
    }

    /// emerg_wr (§5.3.4): the low byte of a write at offset 8 goes straight to the output.
    public mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {
        guard offset == VirtioCon.emergencyWriteOffset, let byte = data.first else { return }
        withUnsafeBytes(of: byte) { backend.sink.write($0) }
    }

    public mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {
        backend.activate(queues: queues, features: features)
    }

    public mutating func reset() { backend.reset() }
}

/// Serves a virtio-console port (§5.3.6): transmitq bytes go to the VM's console sink;
/// host input goes into buffers posted on receiveq, or waits in a bounded buffer until
/// the guest posts some.
public final class VirtioConsoleBackend: VirtioBackend {
    public let sink: any ByteSink
    let core = BackendState()
    /// Host input waiting for receive buffers.
    let pending = Mutex(ByteFIFO(capacity: VirtioCon.pendingCapacity))
    /// DRIVER_OK with receiveq enabled and the device not failed: input may come here.
    private let ready = Atomic<Bool>(false)
    /// Wakes the device thread to deliver newly queued input.
    let service: any Notifier

    public init(sink: any ByteSink, service: any Notifier) {
        self.sink = sink
        self.service = service
    }

    public var epoch: UInt64 { core.epoch }

    /// True once the driver has set DRIVER_OK with a receive queue (and until reset or
    /// failure): the VMM then routes console input here instead of the 8250.
    public var receiveReady: Bool { ready.load(ordering: .acquiring) }

    public func activate(queues: [SplitQueue?], features: VirtioFeatures) {
        core.activate(queues, features: features)
        let rx = VirtioCon.receiveQueue
        ready.store(rx < queues.count && queues[rx] != nil, ordering: .releasing)
    }

    public func reset() {
        ready.store(false, ordering: .releasing)
        core.reset()
    }

    public func halt() {
        ready.store(false, ordering: .releasing)
        core.halt()
    }

    public func queueCursors() -> [SplitQueue.Cursors?] { core.cursors() }

    /// Host input (any thread). Returns how many bytes were queued; the caller offers the
    /// rest again later. Input queued while the device is not ready waits for it.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = pending.withLock { $0.append(bytes) }
        if n > 0 { service.signal() }
        return n
    }

    /// Bytes waiting for receive buffers.
    public var pendingInput: Int { pending.withLock { $0.count } }

    public func queueNotified(_ queue: Int) -> BackendOutcome {
        let outcome = core.batch { s in
            switch queue {
            case VirtioCon.receiveQueue: return s.serve(queue) { q, _ in self.deliverInput(&q) }
            case VirtioCon.transmitQueue: return s.serve(queue) { q, _ in self.transmit(&q) }
            default: return ServeResult()
            }
        }
        noteFailure(outcome)
        return outcome
    }

    /// Polls the driver-to-device queue (receive buffers are not work).
    public func poll(_ phase: PollPhase) -> Bool { core.poll(phase, queues: [VirtioCon.transmitQueue]) }

    public func serviceRequested() -> BackendOutcome {
        let outcome = core.batch { s in
            var r = s.serve(VirtioCon.transmitQueue) { q, _ in self.transmit(&q) }
            if r.fault == nil { r.merge(s.serve(VirtioCon.receiveQueue) { q, _ in self.deliverInput(&q) }) }
            return r
        }
        noteFailure(outcome)
        return outcome
    }

    private func noteFailure(_ outcome: BackendOutcome) {
        if outcome.failure != nil { ready.store(false, ordering: .releasing) }
    }

    /// transmitq: every readable byte of every chain goes to the sink, in order, straight
    /// from guest memory. used.len is 0: nothing is written to the chain.
    func transmit(_ q: inout SplitQueue) -> ServeResult {
        let sink = self.sink
        return q.serve { (chain) throws(DeviceFault) -> UInt32 in
            for b in chain.readable {
                do throws(GuestMemoryError) {
                    try chain.memory.withBytes(at: b.addr, length: Int(b.len)) { p in sink.write(UnsafeRawBufferPointer(p)) }
                } catch {
                    throw .queue(.memory(error))
                }
            }
            return 0
        }
    }

    /// receiveq: fills posted buffers from the pending input. Buffers are consumed only
    /// while there is input; when input remains and no buffer is posted, notifications
    /// are re-enabled so the guest's next post wakes us (with the §2.7.14 re-check).
    func deliverInput(_ q: inout SplitQueue) -> ServeResult {
        var result = ServeResult()
        do throws(DeviceFault) {
            while true {
                while !pending.withLock({ $0.isEmpty }) {
                    guard let head = try vq({ () throws(VirtqueueError) in try q.popAvailable() }) else { break }
                    let chain = try vq { () throws(VirtqueueError) in try q.chain(head: head) }
                    var writer = chain.writer()
                    let n = try vq { () throws(VirtqueueError) in
                        try pending.withLock { (p) throws(VirtqueueError) -> Int in
                            try p.drain { (run) throws(VirtqueueError) -> Int in try writer.write(run) }
                        }
                    }
                    try vq { () throws(VirtqueueError) in try q.addUsed(head: head, len: UInt32(n)) }
                    result.requests += 1
                }
                if pending.withLock({ $0.isEmpty }) {
                    // Nothing to deliver: new buffers need not be announced. Input that
                    // arrives later signals the service eventfd instead.
                    try vq { () throws(VirtqueueError) in try q.disableNotifications() }
                    break
                }
                if !(try vq { () throws(VirtqueueError) in try q.enableNotifications() }) { break }
            }
            if result.requests > 0 {
                result.interrupt = try vq { () throws(VirtqueueError) in try q.needsNotification() }
            }
        } catch {
            result.fault = error
            result.interrupt = result.requests > 0
        }
        return result
    }
}
