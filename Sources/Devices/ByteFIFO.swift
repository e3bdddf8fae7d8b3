/// A bounded FIFO of bytes (a ring over a fixed buffer): host input waiting for a guest
/// that reads it at its own pace. It never grows: what does not fit is refused and the
/// feeder offers it again later (back-pressure, not loss). Used by the 8250's receive
/// buffer, virtio-console's pending input and the terminal reader in pvmm-vmm.
public struct ByteFIFO: Sendable {
    private var storage: [UInt8]
    private var head = 0
    public private(set) var count = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        storage = [UInt8](repeating: 0, count: capacity)
    }

    public var capacity: Int { storage.count }
    public var isEmpty: Bool { count == 0 }
    /// Bytes that still fit.
    public var room: Int { storage.count - count }

    /// Appends `byte` if there is room.
    public mutating func push(_ byte: UInt8) -> Bool {
        guard count < storage.count else { return false }
        storage[(head + count) % storage.count] = byte
        count += 1
        return true
    }

    public mutating func pop() -> UInt8? {
        guard count > 0 else { return nil }
        let b = storage[head]
        head = (head + 1) % storage.count
        count -= 1
        return b
    }

    /// Appends what fits of `bytes`; returns how many were taken.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, room)
        for i in 0..<n { storage[(head + count + i) % storage.count] = bytes[i] }
        count += n
        return n
    }

    /// Offers the oldest bytes to `take` in contiguous runs (at most two: before and
    /// after the wrap) and removes what it took; stops when it takes less than offered.
    /// Returns the bytes removed. An error from `take` removes nothing of that run.
    public mutating func drain<E: Error>(_ take: (UnsafeRawBufferPointer) throws(E) -> Int) throws(E) -> Int {
        var moved = 0
        while count > 0 {
            let run = min(count, storage.count - head)
            let start = head
            let result = storage.withUnsafeBytes { p -> Result<Int, E> in
                do throws(E) {
                    return .success(try take(UnsafeRawBufferPointer(rebasing: p[start..<start + run])))
                } catch {
                    return .failure(error)
                }
            }
            let n = min(max(try result.get(), 0), run)
            head = (head + n) % storage.count
            count -= n
            moved += n
            if n < run { break }
        }
        return moved
    }
}
