#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// What one frame move did.
public enum FrameIOResult: Equatable, Sendable {
    /// Moved one frame of this many bytes. For `receive` this is the frame's full length,
    /// which exceeds the buffers when they were too small (the frame is then truncated
    /// and should be dropped).
    case done(Int)
    /// Nothing to read, or no room to write: wait for the fd (readable / writable).
    case wouldBlock
    /// The peer is gone (passt exited): stop using the channel.
    case closed
    /// This frame failed (it is consumed); the channel stays usable.
    case failed(Errno)
}

/// A host-side frame channel behind a virtio-net device: a tap, or passt's socket. All
/// I/O is non-blocking and moves one frame per call between the channel and iovecs that
/// point into guest memory. Called only from the device's thread.
public protocol FrameChannel: AnyObject, Sendable {
    /// The fd to watch for readable / writable.
    var fd: Int32 { get }
    /// Frames carry a 12-byte struct virtio_net_hdr_v1 in front (a tap with IFF_VNET_HDR);
    /// otherwise they are bare Ethernet frames.
    var vnetHeader: Bool { get }
    /// The MTU the device should advertise.
    var mtu: Int { get }
    /// `send` takes frames whose virtio-net header asks for UDP segmentation (gso_type
    /// UDP_L4: the host cuts one frame into many datagrams). Only with `vnetHeader`.
    var udpSegmentation: Bool { get }
    /// What the host may hand the guest (TUNSETOFFLOAD): frames with partial checksums,
    /// and (with `udpSegmentation`, which needs the checksum) UDP segmentation frames of
    /// up to 64 KiB holding many datagrams (gso_type UDP_L4).
    func setGuestOffload(checksum: Bool, udpSegmentation: Bool)
    /// Reads one frame into `iov`.
    func receive(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult
    /// Writes one frame from `iov`.
    func send(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult
    /// Output accepted earlier but not yet written (stream sockets): the device waits for
    /// writable, then calls `flush`, before it sends more.
    var hasPendingOutput: Bool { get }
    func flush() -> FrameIOResult
}

/// A tap: one readv or writev per frame, straight between the tap and guest memory.
public final class TapChannel: FrameChannel, @unchecked Sendable {
    // @unchecked: `tap` is immutable; readv/writev on one fd are thread-safe.
    public let tap: Tap
    public init(tap: Tap) { self.tap = tap }

    public var fd: Int32 { tap.fd }
    public var vnetHeader: Bool { tap.vnetHeader }
    public var mtu: Int { tap.mtu }
    public var udpSegmentation: Bool { tap.udpSegmentation }
    public var hasPendingOutput: Bool { false }

    public func setGuestOffload(checksum: Bool, udpSegmentation: Bool) {
        try? tap.setOffload(checksum: checksum, udpSegmentation: checksum && udpSegmentation)
    }

    public func receive(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        while true {
            let n = readv(tap.fd, iov.baseAddress, Int32(iov.count))
            if n >= 0 { return .done(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case EBADFD, EIO: return .closed
            default: return .failed(Errno(rawValue: errno))
            }
        }
    }

    public func send(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        while true {
            let n = writev(tap.fd, iov.baseAddress, Int32(iov.count))
            if n >= 0 { return .done(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN, ENOBUFS: return .wouldBlock
            // EIO: the interface is down; the frame is lost as on a cable pulled out.
            default: return .failed(Errno(rawValue: errno))
            }
        }
    }

    public func flush() -> FrameIOResult { .done(0) }
}

/// Copies `frame` into `iov` in order, as far as it fits; returns the bytes copied. For
/// channels that hold frames in host memory (passt's stream buffer, test fakes).
public func copy(_ frame: UnsafeRawBufferPointer, into iov: UnsafeBufferPointer<iovec>) -> Int {
    var off = 0
    for v in iov where off < frame.count {
        let piece = min(v.iov_len, frame.count - off)
        v.iov_base.copyMemory(from: frame.baseAddress! + off, byteCount: piece)
        off += piece
    }
    return off
}
