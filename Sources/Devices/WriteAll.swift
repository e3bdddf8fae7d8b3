#if canImport(Glibc)
import Glibc
#endif

/// Writes all of `s` to `fd` with write(2): unbuffered (no stdio), usable from any thread,
/// retried on EINTR; gives up if the fd is gone. The one writer for pvmm's messages.
public func writeAll(_ fd: Int32, _ s: String) {
    var s = s
    s.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
}

/// Writes all of `bytes` to `fd` (as above); false if the fd failed first.
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var off = 0
    while off < bytes.count {
        let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
        if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return false }
    }
    return true
}

/// Writes `s` to stderr as it is.
public func writeError(_ s: String) { writeAll(STDERR_FILENO, s) }

/// Writes `s` to stdout as it is (the terminal's own messages, not guest output).
public func writeOut(_ s: String) { writeAll(STDOUT_FILENO, s) }

/// Writes one line to stderr, adding the newline if it has none.
@Sendable public func writeStderrLine(_ line: String) {
    writeError(line.hasSuffix("\n") ? line : line + "\n")
}

/// Why `readAll` gave up.
public enum ReadAllError: Error, Sendable {
    /// read(2) failed with this errno.
    case failed(Int32)
    /// More than `limit` bytes.
    case tooLarge(limit: Int)

    public var isTooLarge: Bool { if case .tooLarge = self { true } else { false } }

    public var description: String {
        switch self {
        case .failed(let e): String(cString: strerror(e))
        case .tooLarge(let limit): "larger than \(limit) bytes"
        }
    }
}

/// Reads `fd` to its end, retrying on EINTR; refuses more than `limit` bytes (a hostile
/// or mistaken input must not grow without bound). The one reader for whole small files.
public func readAll(_ fd: Int32, limit: Int) throws(ReadAllError) -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 << 10)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw .failed(errno)
        }
        if n == 0 { return out }
        out += chunk[..<n]
        if out.count > limit { throw .tooLarge(limit: limit) }
    }
}
