#if canImport(Glibc)
import Glibc
#endif

/// Why a disk image could not be opened; `message` is complete ("disk PATH: ...").
public struct DiskImageError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { message }

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
}

// fallocate(2) is declared only under _GNU_SOURCE, which Swift's Glibc module does not
// define, and the Devices target has no C shim of its own. Its arguments are four
// integers, passed the same way by the Swift and C conventions on x86-64 and arm64.
@_silgen_name("fallocate")
private func sys_fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int, _ length: Int) -> Int32

/// A raw disk image: a regular file or block device opened for the VM's whole life.
///
/// Opened O_RDWR (O_RDONLY when read-only) and locked with flock: LOCK_EX for a writable
/// image, LOCK_SH for a read-only one, both non-blocking, so two VMs cannot write the
/// same image (or one write what another reads). The lock lives as long as the fd.
/// All I/O is positional (pread/pwrite), so one fd serves any thread.
public final class DiskImage: Sendable {
    public let path: String
    public let fd: Int32
    public let readOnly: Bool
    /// Size in bytes when opened.
    public let size: UInt64
    /// Which file this is, however it was named (`d.img`, `./d.img`, a symlink).
    public let identity: FileIdentity

    /// Bytes the guest can reach: whole 512-byte sectors (a partial tail is unreachable).
    public var capacityBytes: UInt64 { size / 512 * 512 }

    public static let sectorSize: UInt64 = 512

    /// Bytes past the last whole sector: the guest cannot reach them.
    public var unreachableTail: UInt64 { size % Self.sectorSize }

    private init(path: String, fd: Int32, readOnly: Bool, size: UInt64, identity: FileIdentity) {
        self.path = path
        self.fd = fd
        self.readOnly = readOnly
        self.size = size
        self.identity = identity
    }

    deinit { close(fd) }

    public static func open(path: String, readOnly: Bool) throws(DiskImageError) -> DiskImage {
        func fail(_ why: String) -> DiskImageError { DiskImageError(path: path, message: "disk \(path): \(why)") }
        let fd = Glibc.open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == EROFS { throw fail("read-only file system (use ,readonly)") }
            throw fail(String(cString: strerror(e)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw fail(String(cString: strerror(e)))
        }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFBLK else {
            close(fd)
            throw fail("not a regular file or block device")
        }
        if flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0 {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { throw fail("locked by another process") }
            throw fail("flock: \(String(cString: strerror(e)))")
        }
        // lseek works for block devices too, where st_size is 0.
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else {
            let e = errno
            close(fd)
            throw fail(String(cString: strerror(e)))
        }
        guard end > 0 else {
            close(fd)
            throw fail("empty (0 bytes): a disk needs at least one 512-byte sector")
        }
        return DiskImage(path: path, fd: fd, readOnly: readOnly, size: UInt64(end), identity: FileIdentity(st))
    }

    /// Reads exactly `buffer.count` bytes at `offset`. False on an error or end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Writes all of `buffer` at `offset`. False on an error.
    public func write(from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Makes completed writes durable (VIRTIO_BLK_T_FLUSH).
    public func sync() -> Bool {
        while fdatasync(fd) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }

    static let fallocKeepSize: Int32 = 0x01
    static let fallocPunchHole: Int32 = 0x02
    static let fallocZeroRange: Int32 = 0x10

    private func fallocate(_ mode: Int32, _ offset: UInt64, _ length: UInt64) -> Int32 {
        while true {
            if sys_fallocate(fd, mode, Int(offset), Int(length)) == 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }

    private static func unsupported(_ e: Int32) -> Bool { e == EOPNOTSUPP || e == ENOSYS || e == EINVAL }

    /// Deallocates [offset, offset+length) if the file system can (discard is a hint).
    public func discard(at offset: UInt64, length: UInt64) -> Bool {
        guard length > 0 else { return true }
        let e = fallocate(Self.fallocPunchHole | Self.fallocKeepSize, offset, length)
        return e == 0 || Self.unsupported(e)
    }

    /// Makes [offset, offset+length) read as zeroes: ZERO_RANGE keeps the blocks
    /// allocated, PUNCH_HOLE (preferred when `mayUnmap`) frees them; where the file
    /// system supports neither, zeroes are written.
    public func writeZeroes(at offset: UInt64, length: UInt64, mayUnmap: Bool) -> Bool {
        guard length > 0 else { return true }
        let modes = mayUnmap ? [Self.fallocPunchHole, Self.fallocZeroRange] : [Self.fallocZeroRange, Self.fallocPunchHole]
        for mode in modes {
            let e = fallocate(mode | Self.fallocKeepSize, offset, length)
            if e == 0 { return true }
            if !Self.unsupported(e) { return false }
        }
        let chunk = 64 << 10
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(chunk), length - done))
            guard write(from: UnsafeRawBufferPointer(rebasing: zeroes[0..<n]), at: offset + done) else { return false }
            done += UInt64(n)
        }
        return true
    }
}

/// A file's identity: device and inode, or for a block device the device it is (two nodes
/// can name one disk).
public struct FileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    init(_ st: stat) {
        if st.st_mode & S_IFMT == S_IFBLK {
            (device, inode) = (UInt64(st.st_rdev), 0)
        } else {
            (device, inode) = (UInt64(st.st_dev), UInt64(st.st_ino))
        }
    }

    /// The file `path` names (following symlinks), if it can be stat'ed.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        self.init(st)
    }
}
