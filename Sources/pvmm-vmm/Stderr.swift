#if canImport(Glibc)
import Glibc
#endif

/// Writes to stderr with write(2): unbuffered, safe from any thread.
func writeError(_ s: String) {
    var s = s
    s.withUTF8 { p in
        var off = 0
        while off < p.count {
            let w = write(STDERR_FILENO, p.baseAddress! + off, p.count - off)
            if w <= 0 { if w < 0 && errno == EINTR { continue }; return }
            off += w
        }
    }
}
