#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import Devices
import CKVM

/// An eventfd used to wake a parked or halted vCPU thread. Owns the descriptor.
///
/// `@unchecked Sendable`: the fd is immutable and eventfd reads/writes are thread-safe.
final class EventFD: @unchecked Sendable {
    let fd: Int32

    init() throws(VMMError) {
        let fd = ckvm_eventfd_nonblock()
        if fd < 0 { throw .thread("eventfd: \(Errno(rawValue: -fd))") }
        self.fd = fd
    }

    deinit { close(fd) }

    func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Waits until signalled or `timeoutMs` passes, then clears the count.
    func wait(timeoutMs: Int32) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, timeoutMs)
        var v: UInt64 = 0
        _ = Glibc.read(fd, &v, 8)
    }
}

/// A console sink that writes to a file descriptor (the terminal, a pipe, a socket),
/// retrying short writes and EINTR so no byte is lost.
public final class FDSink: ByteSink, @unchecked Sendable {
    // @unchecked: the fd is immutable; write(2) on one fd is safe from several threads.
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n > 0 { off += n; continue }
            if n < 0 && (errno == EINTR || errno == EAGAIN) {
                if errno == EAGAIN { var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0); _ = poll(&p, 1, 100) }
                continue
            }
            return // the reader went away: drop output rather than stall the vCPU
        }
    }
}

