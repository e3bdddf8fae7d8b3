import Synchronization

/// The VM's console output: a bounded ring that the 8250 (vCPU threads) and
/// virtio-console (its device thread) append to without ever blocking on a reader.
///
/// Bytes are addressed by their absolute position in the output stream (0 = the first
/// byte the guest ever printed): the ring holds [`start`, `end`), `end - capacity` at
/// the least. Readers (the console-output thread's clients, `console.log`) keep their
/// own position; a reader that fell more than `capacity` behind has lost bytes and
/// skips them (`read` says how many). Writers pay a memcpy under a short lock and, when
/// the output thread is idle, one eventfd write to wake it.
///
/// `@unchecked Sendable`: `storage` is only touched with `state` locked.
public final class ConsoleRing: ByteSink, @unchecked Sendable {
    public static let defaultCapacity = 64 << 10

    public let capacity: Int
    private let storage: UnsafeMutablePointer<UInt8>
    /// Total bytes ever written (the stream position after the newest byte).
    private let state = Mutex<UInt64>(0)
    private let wake: any Notifier
    /// Set when a wake-up is outstanding, so a burst of writes signals once.
    private let wakePending = Atomic<Bool>(false)

    /// `wake` is signalled when new bytes arrive and the reader has gone idle.
    public init(capacity: Int = ConsoleRing.defaultCapacity, wake: any Notifier) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.wake = wake
        storage = .allocate(capacity: capacity)
    }

    deinit { storage.deallocate() }

    /// Appends `bytes` (never blocks on a reader; the oldest bytes are overwritten).
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        state.withLock { end in
            // Only the last `capacity` bytes of a huge write can survive.
            let keep = Swift.min(bytes.count, capacity)
            let src = bytes.baseAddress! + (bytes.count - keep)
            let at = Int((end + UInt64(bytes.count - keep)) % UInt64(capacity))
            let first = Swift.min(keep, capacity - at)
            (storage + at).update(from: src.assumingMemoryBound(to: UInt8.self), count: first)
            if keep > first {
                storage.update(from: (src + first).assumingMemoryBound(to: UInt8.self), count: keep - first)
            }
            end += UInt64(bytes.count)
        }
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) { wake.signal() }
    }

    /// The reader calls this before draining, so writes after it signal again.
    public func rearm() { wakePending.store(false, ordering: .releasing) }

    /// Stream position after the newest byte: every byte ever written.
    public var end: UInt64 { state.withLock { $0 } }
    /// Oldest position still held.
    public var start: UInt64 { state.withLock { Self.start(end: $0, capacity: capacity) } }
    /// Bytes written but no longer held.
    public var overwritten: UInt64 { start }

    static func start(end: UInt64, capacity: Int) -> UInt64 { end > UInt64(capacity) ? end - UInt64(capacity) : 0 }

    public struct ReadResult: Equatable, Sendable {
        /// Bytes copied into the buffer, from `from + skipped`.
        public var count: Int
        /// Bytes between `from` and the oldest byte held: lost for this reader.
        public var skipped: UInt64
        /// The position after the copied bytes (the reader's next `from`).
        public var next: UInt64

        public init(count: Int, skipped: UInt64, next: UInt64) {
            self.count = count
            self.skipped = skipped
            self.next = next
        }
    }

    /// Copies bytes from stream position `from` (at most `into.count`, never past `limit`).
    public func read(from: UInt64, into: UnsafeMutableRawBufferPointer, limit: UInt64 = .max) -> ReadResult {
        state.withLock { end in
            let oldest = Self.start(end: end, capacity: capacity)
            let pos = Swift.max(from, oldest)
            let stop = Swift.min(end, limit)
            guard pos < stop, let dst = into.baseAddress else {
                return ReadResult(count: 0, skipped: pos - from, next: pos)
            }
            let n = Int(Swift.min(UInt64(into.count), stop - pos))
            let at = Int(pos % UInt64(capacity))
            let first = Swift.min(n, capacity - at)
            dst.copyMemory(from: storage + at, byteCount: first)
            if n > first { (dst + first).copyMemory(from: storage, byteCount: n - first) }
            return ReadResult(count: n, skipped: pos - from, next: pos + UInt64(n))
        }
    }

    /// Everything the ring holds, oldest first (console.log, tests).
    public func contents() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: capacity)
        let r = out.withUnsafeMutableBytes { read(from: 0, into: $0) }
        return Array(out[..<r.count])
    }
}
