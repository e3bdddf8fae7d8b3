#if canImport(Glibc)
import Glibc
#endif
import CSys
import SystemPackage

/// A file the VMM copies into guest RAM at every boot (the kernel, the initrd), read once
/// while files may still be opened (before the jail's chroot and seccomp), as nothing can
/// be opened by a reboot.
///
/// The bytes live in a memfd, not in the heap: after each copy `release` drops them from
/// the process's page tables (they stay in the memfd), so a multi-MiB Linux kernel or
/// initramfs does not count against the VMM's resident memory (RULES: < 5 MiB), and a
/// user truncating the original file later cannot fault the VMM (a mapping of the file
/// itself would SIGBUS).
final class BootImage: @unchecked Sendable {
    /// Why a file cannot be used: the message for `path` (no such file, a directory...).
    struct Unusable: Error { let message: String }

    let count: Int
    private let base: UnsafeMutableRawPointer?
    private let mapped: Int

    /// Reads the regular file at `path`, at most `limit` bytes (`what` names the limit).
    init(path: String, limit: UInt64, what: String) throws(Unusable) {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) }
        catch { throw Unusable(message: "\(error)") }
        defer { try? fd.close() }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw Unusable(message: "\(Errno(rawValue: errno))") }
        if st.st_mode & S_IFMT == S_IFDIR { throw Unusable(message: "is a directory, not a file") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw Unusable(message: "not a regular file") }
        guard UInt64(st.st_size) <= limit else { throw Unusable(message: "\(st.st_size) bytes is larger than \(what)") }
        let size = Int(st.st_size)
        guard size > 0 else { count = 0; base = nil; mapped = 0; return }
        let mfd = csys_memfd("pvmm-boot-image")
        guard mfd >= 0 else { throw Unusable(message: "memfd: \(Errno(rawValue: -mfd))") }
        defer { close(mfd) }
        guard ftruncate(mfd, off_t(size)) == 0 else { throw Unusable(message: "memfd: \(Errno(rawValue: errno))") }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)
        guard let p, p != MAP_FAILED else { throw Unusable(message: "mmap: \(Errno(rawValue: errno))") }
        var off = 0
        while off < size {
            let n: Int
            do { n = try fd.read(into: UnsafeMutableRawBufferPointer(start: p + off, count: size - off)) }
            catch { munmap(p, size); throw Unusable(message: "\(error)") }
            if n == 0 { break }  // shrank while we read: what we got is the file
            off += n
        }
        count = off
        base = p
        mapped = size
        mprotect(p, size, PROT_READ)
        release()
    }

    deinit { if let base { munmap(base, mapped) } }

    /// The bytes, for `body` to copy into guest RAM; released from residency afterwards.
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        defer { release() }
        return try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    private func release() {
        if let base { _ = madvise(base, count, MADV_DONTNEED) }
    }
}
