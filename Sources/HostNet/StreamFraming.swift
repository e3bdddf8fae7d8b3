#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Splits a byte stream in qemu's socket framing (a 4-byte big-endian length, then that
/// many bytes of Ethernet frame) into frames. The peer (passt) is another process, so the
/// lengths are checked: zero or above `maxFrame` means the stream is corrupt (there is no
/// way to find the next frame boundary), and the channel is closed.
///
/// One fixed buffer, allocated once: at least two maximal frames, compacted when the
/// unread part would not fit. No allocation per frame.
public struct StreamFrameReader {
    public enum Next: Equatable {
        case frame(UnsafeRawBufferPointer)
        /// More bytes are needed (call `fill`).
        case incomplete
        /// A length of 0 or above `maxFrame`.
        case corrupt(length: UInt32)

        public static func == (a: Next, b: Next) -> Bool {
            switch (a, b) {
            case let (.frame(x), .frame(y)): x.baseAddress == y.baseAddress && x.count == y.count
            case (.incomplete, .incomplete): true
            case let (.corrupt(x), .corrupt(y)): x == y
            default: false
            }
        }
    }

    public enum Fill: Equatable {
        case data
        case wouldBlock
        case eof
        case error(Errno)
    }

    public let maxFrame: Int
    let storage: UnsafeMutableRawBufferPointer
    var start = 0
    var end = 0
    /// Bytes of the frame `nextFrame` returned, to drop at `consume`.
    var current = 0

    public init(maxFrame: Int) {
        self.maxFrame = maxFrame
        storage = .allocate(byteCount: 2 * (maxFrame + 4) + 65536, alignment: 16)
    }

    public func free() { storage.deallocate() }

    public var buffered: Int { end - start }

    public mutating func nextFrame() -> Next {
        guard end - start >= 4 else { return .incomplete }
        let p = storage.baseAddress! + start
        let length = UInt32(p.load(as: UInt8.self)) << 24 | UInt32((p + 1).load(as: UInt8.self)) << 16
            | UInt32((p + 2).load(as: UInt8.self)) << 8 | UInt32((p + 3).load(as: UInt8.self))
        guard length != 0, length <= UInt32(maxFrame) else { return .corrupt(length: length) }
        guard end - start >= 4 + Int(length) else { return .incomplete }
        current = 4 + Int(length)
        return .frame(UnsafeRawBufferPointer(start: p + 4, count: Int(length)))
    }

    /// Drops the frame `nextFrame` returned.
    public mutating func consume() {
        start += current
        current = 0
        if start == end { start = 0; end = 0 }
    }

    /// Appends bytes: from `fd` (one non-blocking read).
    public mutating func fill(from fd: Int32) -> Fill {
        compactIfNeeded()
        while true {
            let n = read(fd, storage.baseAddress! + end, storage.count - end)
            if n > 0 { end += n; return .data }
            if n == 0 { return .eof }
            if errno == EINTR { continue }
            return errno == EAGAIN ? .wouldBlock : .error(Errno(rawValue: errno))
        }
    }

    /// Appends `bytes` (tests and the fuzzer); returns how many fit.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        compactIfNeeded()
        let n = min(bytes.count, storage.count - end)
        if n > 0 { (storage.baseAddress! + end).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        end += n
        return n
    }

    /// Moves the unread bytes to the front when a maximal frame would not fit after them.
    mutating func compactIfNeeded() {
        guard start > 0, storage.count - end < maxFrame + 4 else { return }
        let live = end - start
        memmove(storage.baseAddress!, storage.baseAddress! + start, live)
        start = 0
        end = live
    }
}

/// Writes frames in qemu's framing to a non-blocking stream socket: one writev of the
/// length and the frame's iovecs. A partial write keeps the rest in a fixed buffer, and
/// the device sends nothing more until `flush` has written it (on writable).
public struct StreamFrameWriter {
    public let maxFrame: Int
    let storage: UnsafeMutableRawBufferPointer
    /// The length iovec plus the frame's: a frame has at most `maxVectors` pieces.
    let vecs: UnsafeMutablePointer<iovec>
    public static let maxVectors = 1024
    var pendingStart = 0
    var pendingEnd = 0

    public init(maxFrame: Int) {
        self.maxFrame = maxFrame
        storage = .allocate(byteCount: maxFrame + 4, alignment: 16)
        vecs = .allocate(capacity: Self.maxVectors + 1)
    }

    public func free() {
        storage.deallocate()
        vecs.deallocate()
    }

    public var hasPending: Bool { pendingEnd > pendingStart }

    public mutating func send(_ iov: UnsafeBufferPointer<iovec>, to fd: Int32) -> FrameIOResult {
        guard !hasPending else { return .wouldBlock }
        var total = 0
        for v in iov { total += v.iov_len }
        guard total > 0, total <= maxFrame, iov.count <= Self.maxVectors else { return .failed(.messageTooLong) }
        var header = UInt32(total).bigEndian
        let vecs = self.vecs
        return withUnsafeMutableBytes(of: &header) { h -> FrameIOResult in
            vecs[0] = iovec(iov_base: h.baseAddress, iov_len: 4)
            for i in 0..<iov.count { vecs[i + 1] = iov[i] }
            var n: Int
            repeat { n = writev(fd, vecs, Int32(iov.count + 1)) } while n < 0 && errno == EINTR
            if n < 0 {
                if errno == EAGAIN { return .wouldBlock }
                return errno == EPIPE || errno == ECONNRESET ? .closed : .failed(Errno(rawValue: errno))
            }
            if n < total + 4 {
                // Keep the unwritten tail: the stream must stay whole.
                var skip = n
                pendingStart = 0
                pendingEnd = 0
                for i in 0...iov.count {
                    let v = vecs[i]
                    if skip >= v.iov_len { skip -= v.iov_len; continue }
                    let piece = v.iov_len - skip
                    (storage.baseAddress! + pendingEnd).copyMemory(from: v.iov_base! + skip, byteCount: piece)
                    pendingEnd += piece
                    skip = 0
                }
            }
            return .done(total)
        }
    }

    public mutating func flush(to fd: Int32) -> FrameIOResult {
        while hasPending {
            let n = write(fd, storage.baseAddress! + pendingStart, pendingEnd - pendingStart)
            if n > 0 { pendingStart += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return .wouldBlock }
            return .closed
        }
        pendingStart = 0
        pendingEnd = 0
        return .done(0)
    }
}
