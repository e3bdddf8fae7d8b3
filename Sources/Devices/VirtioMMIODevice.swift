#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Synchronization
import Virtio

/// Something to wake: in the VMM an eventfd (a queue's notification fd, the irqfd, a
/// device thread's service fd); in tests a recorder.
public protocol Notifier: AnyObject, Sendable {
    func signal()
}

/// A device-specific counter with the key it has in PVMM_STATS ("rx_packets").
public struct NamedCounter: Sendable {
    public let key: String
    public let counter: StatCounter
    public init(_ key: String, _ counter: StatCounter) {
        self.key = key
        self.counter = counter
    }
}

/// Per-device counters, so benchmarks can report notifications and interrupts per request.
public final class DeviceStats: Sendable {
    /// Short name used as the key prefix in PVMM_STATS ("blk0", "con0").
    public let name: String
    /// Requests completed (chains returned in a used ring).
    public let requests = StatCounter()
    /// Queue notifications from the driver (ioeventfd signals, or MMIO QueueNotify exits).
    public let notifications = StatCounter()
    /// Interrupts injected (irqfd writes).
    public let interrupts = StatCounter()
    /// Times the device entered DEVICE_NEEDS_RESET (bad guest input).
    public let errors = StatCounter()
    /// The device's own counters (virtio-net: packets, bytes, drops by reason).
    public let extra: [NamedCounter]

    public init(name: String, extra: [NamedCounter] = []) {
        self.name = name
        self.extra = extra
    }

    /// "blk0.requests=1 blk0.notifications=2 ...": the PVMM_STATS words of this device.
    public var summary: String {
        ([("requests", requests), ("notifications", notifications), ("interrupts", interrupts)]
            + extra.map { ($0.key, $0.counter) }).map { "\(name).\($0.0)=\($0.1.value)" }.joined(separator: " ")
    }
}

/// Why a backend stopped serving: a virtqueue rule broken (§2.7) or a request the device
/// spec treats as a device error rather than an I/O error. Either way the device sets
/// DEVICE_NEEDS_RESET (§2.1.2) and stops touching the queues.
public enum DeviceFault: Error, Equatable, Sendable, CustomStringConvertible {
    case queue(VirtqueueError)
    case malformed(String)

    public var description: String {
        switch self {
        case .queue(let e): "\(e)"
        case .malformed(let m): m
        }
    }
}

/// What one batch on the device thread did, for `VirtioMMIODevice` to turn into register
/// state and an interrupt.
public struct BackendOutcome: Equatable, Sendable {
    /// The backend's epoch when the batch ran: a reset or re-activation since then makes the
    /// outcome stale (its queues are gone), and it is dropped.
    public var epoch: UInt64
    /// Chains returned to the driver.
    public var requests = 0
    /// The driver asked for a used-buffer notification (§2.7.7).
    public var interrupt = false
    /// Set when the backend hit a DeviceFault; it has already stopped serving.
    public var failure: String?
    /// The device changed its config space (virtio-net: link status): bump
    /// ConfigGeneration and send a configuration change notification.
    public var configChanged = false
    /// The batch ended early to deliver `interrupt` to a driver waiting for one of its
    /// completions (EVENT_IDX) while work is still queued: serve again at once.
    public var more = false

    public init(epoch: UInt64, requests: Int = 0, interrupt: Bool = false, failure: String? = nil,
                configChanged: Bool = false, more: Bool = false) {
        self.epoch = epoch
        self.requests = requests
        self.interrupt = interrupt
        self.failure = failure
        self.configChanged = configChanged
        self.more = more
    }
}

/// The part of a device that owns its queues after DRIVER_OK and does the work on the
/// device thread. It has its own lock, so `reset()` from a vCPU (inside the transport
/// lock) waits for an in-flight batch; it never takes the transport lock itself, which
/// keeps the lock order transport -> backend on every path.
public protocol VirtioBackend: AnyObject, Sendable {
    /// Bumped by every activate and reset, under the backend lock.
    var epoch: UInt64 { get }
    /// The driver notified `queue` (device thread).
    func queueNotified(_ queue: Int) -> BackendOutcome
    /// Serve whatever may be pending: buffers posted before DRIVER_OK, host-side input.
    func serviceRequested() -> BackendOutcome
    /// DEVICE_NEEDS_RESET was set by the transport: stop touching the queues until reset.
    func halt()
    /// One step of the device thread's adaptive polling (BackendState.poll over the
    /// backend's driver-to-device queues).
    func poll(_ phase: PollPhase) -> Bool
    /// The cursors of the queues in service (a snapshot; device thread quiesced).
    func queueCursors() -> [SplitQueue.Cursors?]
    /// Finishes host work in flight (a snapshot, device thread quiesced): afterwards every
    /// chain taken from an available ring is back in its used ring, so nothing is lost or
    /// done twice when the saved state runs again.
    func settle() -> BackendOutcome
    /// The backend as a HostFDBackend when it serves a host fd, else nil. A requirement
    /// rather than an `as?` cast: a cast to a protocol scans every conformance record of
    /// the binary once, ~0.25 MiB of pages the VMM process would otherwise never touch.
    var hostFDBackend: (any HostFDBackend)? { get }
}

extension VirtioBackend {
    public var hostFDBackend: (any HostFDBackend)? { nil }
    public func settle() -> BackendOutcome { BackendOutcome(epoch: epoch) }
}

/// A device model whose work is done by a backend object.
public protocol VirtioBackedModel: VirtioDeviceModel, Sendable {
    associatedtype Backend: VirtioBackend
    var backend: Backend { get }
}

/// The non-generic face of a virtio-mmio device, for the VMM's wiring.
public protocol VirtioDeviceControl: MMIODevice {
    var stats: DeviceStats { get }
    /// Called on the device thread when queue `queue`'s eventfd fired `count` times.
    func queueNotified(_ queue: Int, count: UInt64)
    /// One step of adaptive polling (device thread): `.check` and `.end` serve the queues
    /// when the driver posted buffers, and say so.
    func poll(_ phase: PollPhase) -> Bool
    /// Called on the device thread when the service eventfd fired.
    func serviceRequested()
    /// Host-initiated device reset (a VM reboot): as if the driver wrote 0 to Status
    /// (§2.4). Called while the device thread is quiesced.
    func resetDevice()
    /// The virtio device ID (§5): a restore checks the saved device is the same kind.
    var deviceTypeID: UInt32 { get }
    /// Settles host I/O, then returns the transport registers and queue cursors, and how
    /// many requests the settling completed (a snapshot: vCPUs parked, device thread
    /// quiesced).
    func savedState() -> (state: MMIOTransportState, settled: Int)
    /// Puts a saved state back on the device as built (a restore, before anything runs);
    /// the device thread then looks at every served queue once.
    func restoreState(_ state: MMIOTransportState) throws(TransportRestoreError)
    /// Called on the device thread when a host fd the backend watches is ready.
    func hostEvent(_ events: IOEvents)
}

/// A backend that also serves a host fd (a tap, a socket) on its device thread.
public protocol HostFDBackend: VirtioBackend {
    /// The fd to watch; its interest is managed by the backend through `attach`.
    var hostFD: Int32 { get }
    /// Hands the backend the device thread's IOInterest (before the thread starts).
    func attach(_ interest: any IOInterest)
    /// `hostFD` is ready (device thread).
    func hostEvent(_ events: IOEvents) -> BackendOutcome
}

/// A virtio-mmio device (virtio 1.2 §4.2) on the MMIO bus: the register file
/// (`MMIOTransport`) behind a Mutex, plus the wiring around it.
///
/// vCPU threads do register accesses; the device thread reports finished batches through
/// `queueNotified`/`serviceRequested`. Interrupts go out through one irqfd per device
/// (`interrupt`): InterruptStatus is set first, under the lock, then the irqfd is written,
/// so the guest's handler always finds the reason. Queue notifications normally arrive
/// through ioeventfds the VMM registered on QueueNotify; a notify that does reach the
/// transport (no ioeventfd) signals the same queue eventfd.
public final class VirtioMMIODevice<Model: VirtioBackedModel>: VirtioDeviceControl {
    /// "virtio-blk blk0": the prefix of log lines.
    public let name: String
    public let backend: Model.Backend
    /// The backend again when it serves a host fd (cast once, not per event).
    let hostBackend: (any HostFDBackend)?
    public let stats: DeviceStats
    let transport: Mutex<MMIOTransport<Model>>
    let interrupt: any Notifier
    let queueNotifiers: [any Notifier]
    let service: any Notifier
    let log: @Sendable (String) -> Void
    /// DEVICE_NEEDS_RESET lines logged so far: a guest that fails and resets the device in
    /// a loop must not flood stderr.
    private let failuresLogged = Atomic<Int>(0)
    static var maxFailureLines: Int { 20 }

    /// `queueNotifiers[i]` wakes the device thread for queue i; `service` wakes it for
    /// `serviceRequested`; `interrupt` is the irqfd.
    public init(model: Model, memory: GuestMemory, name: String, stats: DeviceStats, interrupt: any Notifier,
                queueNotifiers: [any Notifier], service: any Notifier,
                log: @escaping @Sendable (String) -> Void = writeStderrLine) {
        self.name = name
        self.backend = model.backend
        hostBackend = model.backend.hostFDBackend
        self.stats = stats
        self.interrupt = interrupt
        self.queueNotifiers = queueNotifiers
        self.service = service
        self.log = log
        transport = Mutex(MMIOTransport(device: model, memory: memory))
    }

    // MARK: Guest accesses (vCPU threads)

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let access = Access(bytes: data)
        transport.withLock { $0.read(offset: offset, into: access.bytes) }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        let backend = self.backend
        let access = Access(bytes: UnsafeMutableRawBufferPointer(mutating: data))
        let action = transport.withLock { t -> MMIOAction in
            let a = t.write(offset: offset, from: UnsafeRawBufferPointer(access.bytes))
            // Halt inside the lock so no batch starts on queues the transport gave up on.
            if case .failed = a { backend.halt() }
            return a
        }
        switch action {
        case .none, .reset:
            // .reset: the model's reset() already stopped the backend and dropped its queues.
            break
        case .notify(let q):
            if Int(q) < queueNotifiers.count { queueNotifiers[Int(q)].signal() }
        case .activate:
            // A driver may post buffers before DRIVER_OK (and notify, which the transport
            // ignores then): have the device thread look at every queue once.
            service.signal()
        case .failed(let reason, let inject):
            report(reason)
            if inject { raiseInterrupt() }
        }
        return .none
    }

    public func resetDevice() {
        let zero: UInt32 = 0
        withUnsafeBytes(of: zero) { z in
            let access = Access(bytes: UnsafeMutableRawBufferPointer(mutating: z))
            _ = transport.withLock { $0.write(offset: MMIORegister.status, from: UnsafeRawBufferPointer(access.bytes)) }
        }
        failuresLogged.store(0, ordering: .relaxed)
    }

    // MARK: Snapshot

    public var deviceTypeID: UInt32 { transport.withLock { $0.device.deviceType.rawValue } }

    public func savedState() -> (state: MMIOTransportState, settled: Int) {
        let settled = backend.settle()
        complete(settled)
        let backend = self.backend
        return (transport.withLock { t in t.savedState(cursors: backend.queueCursors()) }, settled.requests)
    }

    public func restoreState(_ state: MMIOTransportState) throws(TransportRestoreError) {
        let backend = self.backend
        let active = try transport.withLock { (t) throws(TransportRestoreError) -> Bool in
            let active = try t.restore(state)
            if t.status.contains(.deviceNeedsReset) { backend.halt() }
            return active
        }
        // Buffers the driver posted (and notifications the snapshot did not carry).
        if active { service.signal() }
    }

    // MARK: Device thread

    public func queueNotified(_ queue: Int, count: UInt64 = 1) {
        stats.notifications.add(count)
        completeAll(backend.queueNotified(queue))
    }

    public func serviceRequested() {
        completeAll(backend.serviceRequested())
    }

    /// `complete`, then serve again as long as the backend cut its batch short to get an
    /// interrupt out first (`BackendOutcome.more`).
    func completeAll(_ first: BackendOutcome) {
        var outcome = first
        complete(outcome)
        while outcome.more {
            outcome = backend.serviceRequested()
            complete(outcome)
        }
    }

    public func poll(_ phase: PollPhase) -> Bool {
        guard backend.poll(phase) else { return false }
        if phase != .begin { serviceRequested() }
        return true
    }

    public func hostEvent(_ events: IOEvents) {
        if let b = hostBackend { complete(b.hostEvent(events)) }
    }

    /// Publishes a batch's result: InterruptStatus and DEVICE_NEEDS_RESET under the
    /// transport lock, then at most one interrupt.
    func complete(_ outcome: BackendOutcome) {
        if outcome.requests > 0 { stats.requests.add(UInt64(outcome.requests)) }
        guard outcome.interrupt || outcome.failure != nil || outcome.configChanged else { return }
        let backend = self.backend
        let (inject, failure) = transport.withLock { t -> (Bool, String?) in
            // activate/reset change the epoch only inside this lock, so the check holds.
            guard backend.epoch == outcome.epoch else { return (false, nil) }
            var inject = false
            var failure: String?
            if outcome.interrupt {
                t.signalUsedBuffers()
                inject = true
            }
            if outcome.configChanged, t.configChanged() { inject = true }
            if let reason = outcome.failure, case .failed(let r, let configInterrupt) = t.fail(reason: reason) {
                failure = r
                inject = inject || configInterrupt
            }
            return (inject, failure)
        }
        if let failure { report(failure) }
        if inject { raiseInterrupt() }
    }

    func raiseInterrupt() {
        stats.interrupts.add()
        interrupt.signal()
    }

    func report(_ reason: String) {
        stats.errors.add()
        let n = failuresLogged.wrappingAdd(1, ordering: .relaxed).newValue
        if n <= Self.maxFailureLines {
            log("pvmm: \(name): DEVICE_NEEDS_RESET: \(reason)")
        } else if n == Self.maxFailureLines + 1 {
            log("pvmm: \(name): DEVICE_NEEDS_RESET again; not logging further ones")
        }
    }

    // MARK: Observation (tests, diagnostics)

    public var status: DeviceStatus { transport.withLock { $0.status } }
    public var interruptStatus: InterruptStatus { transport.withLock { $0.interruptStatus } }
    public var failureReason: String? { transport.withLock { $0.failureReason } }
}

/// The bytes of one MMIO access, carried into the transport's lock.
///
/// `@unchecked Sendable`: the pointer is the vCPU's kvm_run data (or a caller's buffer),
/// used only synchronously by the calling thread while it holds the lock; it never
/// escapes the call.
struct Access: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
}
