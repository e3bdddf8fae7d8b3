import VMDefinition
#if canImport(Glibc)
import Glibc
#endif

/// Why a request to the daemon failed before an HTTP answer came back.
public enum ClientError: Error, CustomStringConvertible {
    /// Nothing listens on the socket.
    case notRunning(socket: String)
    case permissionDenied(socket: String)
    case io(String)
    case http(HTTPResponseParser.Failure)
    case webSocket(String)
    /// The daemon answered with an error status and `{"error":...,"field":...}`.
    case api(status: Int, message: String, field: String?)

    public var description: String {
        switch self {
        case .notRunning(let s):
            "the pvmm daemon is not running (nothing listens on \(s)); start it with:\n    sudo pvmm daemon"
                + (s == DaemonClient.defaultSocket ? "" : " --socket \(s)")
        case .permissionDenied(let s):
            "permission denied on \(s): the daemon's socket is its owner's only (mode 0600); run as that user (sudo)"
        case .io(let m): m
        case .http(let f): f.description
        case .webSocket(let m): m
        case .api(let status, let message, let field): (field.map { "\($0): " } ?? "") + message + " (HTTP \(status))"
        }
    }
}

public struct HTTPReply {
    public var status: Int
    public var head: HTTPResponseParser.Head
    public var body: [UInt8]
    public var json: JSONValue? { try? JSONValue(parsing: body) }
}

/// A blocking HTTP/1.1 client for the daemon's Unix socket: one connection per request
/// (`Connection: close`), no Foundation, so `pvmm ls` starts as fast as `pvmm run`.
public struct DaemonClient {
    public static let defaultSocket = "/run/pvmm/pvmm.sock"
    public let socket: String

    /// `--socket`, else $PVMM_SOCKET, else the default.
    public init(socket: String?) {
        self.socket = socket ?? getenv("PVMM_SOCKET").map { String(cString: $0) } ?? Self.defaultSocket
    }

    public func connect() throws(ClientError) -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .io("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socket.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else { close(fd); throw .io("\(socket): path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.enumerated() { p[i] = b }
            p[path.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            switch e {
            case ENOENT, ECONNREFUSED: throw .notRunning(socket: socket)
            case EACCES, EPERM: throw .permissionDenied(socket: socket)
            default: throw .io("\(socket): \(String(cString: strerror(e)))")
            }
        }
        return fd
    }

    /// One request; `close` asks the daemon to close the connection after the answer
    /// (an upgrade request must not).
    static func requestBytes(_ method: String, _ path: String, body: [UInt8]?, extraHeaders: [String] = [], close: Bool = true) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: pvmm\r\nUser-Agent: pvmm\r\n" + (close ? "Connection: close\r\n" : "")
        for h in extraHeaders { head += h + "\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (body ?? [])
    }

    /// Sends a request; `onBody` gets body bytes as they arrive (streams), else the reply
    /// holds them. Throws `.api` for a status >= 400, with the daemon's message.
    @discardableResult
    public func send(_ method: String, _ path: String, json: JSONValue? = nil, body: [UInt8]? = nil,
                     onBody: (([UInt8]) -> Bool)? = nil) throws(ClientError) -> HTTPReply {
        let fd = try connect()
        defer { close(fd) }
        try writeAll(fd, Self.requestBytes(method, path, body: json.map(\.encodedBytes) ?? body))
        var parser = HTTPResponseParser(requestWasHead: method == "HEAD")
        var collected: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var streaming = false
        while !parser.isComplete {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw .io("read: \(String(cString: strerror(errno)))") }
            if n == 0 {
                do { try parser.finish() } catch { throw .http(error) }
                break
            }
            let bytes: [UInt8]
            do { bytes = try parser.feed(chunk[..<n]) } catch { throw .http(error) }
            if let onBody, let h = parser.head, h.status < 400 {
                streaming = true
                if !bytes.isEmpty, !onBody(bytes) { break }
            } else {
                collected += bytes
            }
        }
        guard let head = parser.head else { throw .http(.malformed("no response")) }
        if head.status >= 400 {
            let j = try? JSONValue(parsing: collected)
            throw .api(status: head.status, message: j?["error"]?.stringValue ?? String(decoding: collected, as: UTF8.self),
                       field: j?["field"]?.stringValue)
        }
        _ = streaming
        return HTTPReply(status: head.status, head: head, body: collected)
    }
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(ClientError) {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw .io("write: \(String(cString: strerror(errno)))") }
        off += n
    }
}

/// Reads 16 random bytes from the kernel (getrandom(2) through /dev/urandom).
func randomBytes(_ n: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: n)
    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    if fd >= 0 {
        _ = out.withUnsafeMutableBytes { read(fd, $0.baseAddress, n) }
        close(fd)
    }
    return out
}
