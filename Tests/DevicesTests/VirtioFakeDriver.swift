import Devices
import GuestMemory
import Synchronization
import Testing
import Virtio

/// Counts signals instead of writing an eventfd; `onSignal` runs at each (a test looks
/// at guest memory the moment an interrupt goes out).
final class RecordingNotifier: Notifier {
    let count = Mutex(0)
    let hook = Mutex<(@Sendable () -> Void)?>(nil)
    func signal() {
        count.withLock { $0 += 1 }
        hook.withLock { $0 }?()
    }
    func onSignal(_ body: @escaping @Sendable () -> Void) { hook.withLock { $0 = body } }
    var signals: Int { count.withLock { $0 } }
    /// Signals since the last call.
    func take() -> Int { count.withLock { c in defer { c = 0 }; return c } }
}

final class LogRecorder: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { [self] line in lines.withLock { $0.append(line) } } }
}

/// One split queue as a driver lays it out in guest memory.
struct FakeQueue {
    let mem: GuestMemory
    let size: UInt16
    let desc: UInt64
    let avail: UInt64
    let used: UInt64
    var availIdx: UInt16 = 0
    var nextDescriptor: UInt16 = 0

    /// Writes a chain of direct descriptors (readable ones first) and makes it available.
    @discardableResult
    mutating func post(readable: [Buffer] = [], writable: [Buffer] = []) throws -> UInt16 {
        let parts = readable.map { ($0, false) } + writable.map { ($0, true) }
        let head = nextDescriptor
        for (i, (b, w)) in parts.enumerated() {
            let index = (head &+ UInt16(i)) % size
            let last = i == parts.count - 1
            var flags: UInt16 = w ? Descriptor.flagWrite : 0
            if !last { flags |= Descriptor.flagNext }
            try mem.write(Descriptor(addr: b.addr, len: b.len, flags: flags, next: (index + 1) % size).bytes,
                          at: desc + 16 * UInt64(index))
        }
        nextDescriptor = (head &+ UInt16(parts.count)) % size
        try offer(head)
        return head
    }

    /// Writes one raw descriptor (for malformed chains).
    func setDescriptor(_ index: UInt16, _ d: Descriptor) throws {
        try mem.write(d.bytes, at: desc + 16 * UInt64(index))
    }

    mutating func offer(_ head: UInt16) throws {
        try mem.write(head, at: avail + 4 + 2 * UInt64(availIdx % size))
        availIdx &+= 1
        try mem.write(availIdx, at: avail + 2)
    }

    func setUsedEvent(_ v: UInt16) throws { try mem.write(v, at: avail + 4 + 2 * UInt64(size)) }
    func setAvailFlags(_ v: UInt16) throws { try mem.write(v, at: avail) }
    func usedIdx() throws -> UInt16 { try mem.read(at: used + 2) }
    func usedFlags() throws -> UInt16 { try mem.read(at: used) }
    func availEvent() throws -> UInt16 { try mem.read(at: used + 4 + 8 * UInt64(size)) }
    func usedElement(_ n: UInt16) throws -> (id: UInt32, len: UInt32) {
        let a = used + 4 + 8 * UInt64(n % size)
        return (try mem.read(at: a), try mem.read(at: a + 4))
    }
}

/// Plays a virtio-mmio driver against a `VirtioMMIODevice` over its registers (§3.1.1,
/// §4.2.3), then posts chains and runs the device thread's side synchronously.
final class FakeDriver<Model: VirtioBackedModel> {
    let mem: GuestMemory
    let device: VirtioMMIODevice<Model>
    let irq = RecordingNotifier()
    let service = RecordingNotifier()
    let kicks: [RecordingNotifier]
    let log = LogRecorder()
    var queues: [FakeQueue] = []
    /// Data buffers are carved from here up.
    private var nextData: UInt64 = 0x40_0000

    init(model: Model, memory: GuestMemory? = nil) throws {
        mem = try memory ?? GuestMemory(size: 16 << 20)
        kicks = model.queueMaxSizes.map { _ in RecordingNotifier() }
        device = VirtioMMIODevice(model: model, memory: mem, name: "virtio-test t0", stats: DeviceStats(name: "t0"),
                                  interrupt: irq, queueNotifiers: kicks, service: service, log: log.sink)
    }

    func r32(_ offset: UInt64) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { device.read(offset: offset, into: $0) }
        return UInt32(littleEndian: v)
    }

    func w32(_ offset: UInt64, _ value: UInt32) {
        _ = withUnsafeBytes(of: value.littleEndian) { device.write(offset: offset, from: $0) }
    }

    var status: DeviceStatus { DeviceStatus(rawValue: r32(MMIORegister.status)) }

    /// Negotiates `features` (VERSION_1 added), sets up every queue with `size` entries
    /// and sets DRIVER_OK. Queue q lives at 0x10000 * (q + 1).
    func start(features: VirtioFeatures, size: UInt16 = 64, enable: [Bool]? = nil) {
        let f = features.union(.version1)
        w32(MMIORegister.status, DeviceStatus.acknowledge.rawValue)
        w32(MMIORegister.status, DeviceStatus([.acknowledge, .driver]).rawValue)
        w32(MMIORegister.driverFeaturesSel, 0)
        w32(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: f.rawValue))
        w32(MMIORegister.driverFeaturesSel, 1)
        w32(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: f.rawValue >> 32))
        w32(MMIORegister.status, DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)
        queues = []
        for q in 0..<kicks.count {
            let base = 0x10000 * UInt64(q + 1)
            let fq = FakeQueue(mem: mem, size: size, desc: base, avail: base + 0x2000, used: base + 0x4000)
            queues.append(fq)
            guard enable?[q] ?? true else { continue }
            w32(MMIORegister.queueSel, UInt32(q))
            w32(MMIORegister.queueNum, UInt32(size))
            for (lo, addr) in [(MMIORegister.queueDescLow, fq.desc), (MMIORegister.queueDriverLow, fq.avail),
                               (MMIORegister.queueDeviceLow, fq.used)] {
                w32(lo, UInt32(truncatingIfNeeded: addr))
                w32(lo + 4, UInt32(truncatingIfNeeded: addr >> 32))
            }
            w32(MMIORegister.queueReady, 1)
        }
        w32(MMIORegister.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
    }

    /// A fresh data buffer of `length` bytes filled with `fill`.
    func buffer(_ length: UInt32, fill: UInt8 = 0) throws -> Buffer {
        let b = Buffer(addr: nextData, len: length)
        try mem.fill(fill, at: nextData, count: UInt64(length))
        nextData += (UInt64(length) + 63) & ~63
        return b
    }

    /// A buffer holding `bytes`.
    func buffer(_ bytes: [UInt8]) throws -> Buffer {
        let b = try buffer(UInt32(bytes.count))
        try mem.write(bytes, at: b.addr)
        return b
    }

    func bytes(_ b: Buffer) throws -> [UInt8] { try mem.readBytes(at: b.addr, count: Int(b.len)) }

    /// What the device thread does when queue `q`'s eventfd fires.
    func kick(_ q: Int = 0) { device.queueNotified(q, count: 1) }
}

extension Array where Element == UInt8 {
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }
}
