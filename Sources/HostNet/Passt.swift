#if canImport(Glibc)
import Glibc
#endif
import CSys
import SystemPackage

/// passt (user-mode networking, Debian package `passt`) behind a virtio-net device: a
/// connected Unix stream socket carrying frames in qemu's framing, a 4-byte big-endian
/// length then the Ethernet frame. pvmm either starts passt itself (`launch`, over a
/// socketpair handed to `passt --fd`) or connects to one started with `--socket PATH`.
public final class PasstChannel: FrameChannel, @unchecked Sendable {
    // @unchecked: reader and writer are used only on the device thread.
    public let fd: Int32
    /// The passt process pvmm started, or nil for a given socket.
    public private(set) var pid: Int32?
    public let mtu: Int
    public var vnetHeader: Bool { false }
    public var udpSegmentation: Bool { false }
    var reader: StreamFrameReader
    var writer: StreamFrameWriter

    /// The largest frame the qemu framing can carry that we accept (passt's own limit is
    /// 65535 + 14): a larger length means the stream is corrupt.
    public static let maxFrame = 65535 + 14

    init(fd: Int32, pid: Int32?, mtu: Int) {
        self.fd = fd
        self.pid = pid
        self.mtu = mtu
        reader = StreamFrameReader(maxFrame: Self.maxFrame)
        writer = StreamFrameWriter(maxFrame: Self.maxFrame)
    }

    deinit {
        close(fd)
        terminate()
        reader.free()
        writer.free()
    }

    /// Starts `passt --foreground --quiet --fd 3 --mtu MTU` on one end of a socketpair.
    /// passt gets SIGTERM when the VMM's main thread ends, and `terminate()` ends it too.
    public static func launch(mtu: Int, executable: String = "passt") throws(HostNetError) -> PasstChannel {
        guard findExecutable(executable) else { throw .passtNotInstalled }
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else {
            throw .passtStart(errno: Errno(rawValue: errno))
        }
        let argv = [executable, "--foreground", "--quiet", "--fd", "3", "--mtu", String(mtu)]
        let cArgv = argv.map { strdup($0) } + [nil]
        defer { cArgv.forEach { free($0) } }
        let pid = csys_spawn(cArgv, sv[1], 3)
        close(sv[1])
        if pid < 0 {
            close(sv[0])
            throw .passtStart(errno: Errno(rawValue: -pid))
        }
        _ = fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK)
        return PasstChannel(fd: sv[0], pid: pid, mtu: mtu)
    }

    /// Connects to passt's socket at `path` (passt started with `--socket PATH`).
    public static func connect(path: String, mtu: Int) throws(HostNetError) -> PasstChannel {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw .passtSocketPath(path: path) }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .passtSocket(path: path, errno: Errno(rawValue: errno)) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            throw .passtSocket(path: path, errno: Errno(rawValue: e))
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return PasstChannel(fd: fd, pid: nil, mtu: mtu)
    }

    /// Ends the passt process pvmm started (SIGTERM, then reaps it).
    public func terminate() {
        guard let p = pid else { return }
        pid = nil
        kill(p, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<200 {
            if csys_waitpid(p, &status, 0) != 0 { return }
            usleep(1000)
        }
        kill(p, SIGKILL)
        _ = csys_waitpid(p, &status, 1)
    }

    public func setGuestOffload(checksum: Bool, udpSegmentation: Bool) {}

    public func receive(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        while true {
            switch reader.nextFrame() {
            case .frame(let frame):
                _ = copy(frame, into: iov)
                reader.consume()
                // The whole length: longer than `iov` means the frame was too big for it.
                return .done(frame.count)
            case .corrupt:
                return .closed
            case .incomplete:
                switch reader.fill(from: fd) {
                case .data: continue
                case .wouldBlock: return .wouldBlock
                case .eof: return .closed
                case .error(let e): return .failed(e)
                }
            }
        }
    }

    public var hasPendingOutput: Bool { writer.hasPending }

    public func send(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult { writer.send(iov, to: fd) }

    public func flush() -> FrameIOResult { writer.flush(to: fd) }

    static func findExecutable(_ name: String) -> Bool {
        if name.contains("/") { return access(name, X_OK) == 0 }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { access("\($0)/\(name)", X_OK) == 0 }
    }
}
