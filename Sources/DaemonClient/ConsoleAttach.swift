import VMDefinition
#if canImport(Glibc)
import Glibc
#endif

/// `pvmm console NAME`: the VM's console on this terminal through the daemon's WebSocket
/// (GET /v1/vms/NAME/console), the terminal in raw mode, Ctrl-] to detach (the VM keeps
/// running). Output goes to stdout as it arrives; stdin's bytes go to the guest.
public struct ConsoleAttach {
    public static let detachKey: UInt8 = 0x1D  // Ctrl-]

    let client: DaemonClient
    let name: String

    public init(client: DaemonClient, name: String) {
        self.client = client
        self.name = name
    }

    /// Opens the WebSocket: returns the fd and bytes that followed the 101 response.
    public func open() throws(ClientError) -> (fd: Int32, pending: [UInt8]) {
        let fd = try client.connect()
        let key = base64(randomBytes(16))
        let request = DaemonClient.requestBytes("GET", "/v1/vms/\(name)/console", body: nil, extraHeaders: [
            "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: \(key)", "Sec-WebSocket-Version: 13",
        ], close: false)
        do { try writeAll(fd, request) } catch { close(fd); throw error }
        var parser = HTTPResponseParser()
        var body: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while parser.head == nil || (parser.head!.status != 101 && !parser.isComplete) {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            do { body += try parser.feed(chunk[..<n]) } catch { close(fd); throw .http(error) }
        }
        guard let head = parser.head else { close(fd); throw .http(.malformed("connection closed during the handshake")) }
        guard head.status == 101 else {
            close(fd)
            let j = try? JSONValue(parsing: body)
            throw .api(status: head.status, message: j?["error"]?.stringValue ?? "the daemon refused the console upgrade",
                       field: j?["field"]?.stringValue)
        }
        return (fd, parser.remainder)
    }

    /// Runs until Ctrl-] (returns true), or the daemon closes the console (false: the VM
    /// ended or the daemon stopped).
    public func run(input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO) throws(ClientError) -> Bool {
        // Asked first so the common mistakes get the daemon's 404 or a plain 409, before
        // the terminal changes mode.
        let vm = try client.send("GET", "/v1/vms/\(name)").json
        let state = vm?["state"]?.stringValue ?? "?"
        guard ["starting", "running", "paused", "stopping"].contains(state) else {
            throw .api(status: 409, message: "\(name) is \(state): start it first (pvmm start \(name))", field: "state")
        }
        let (fd, pending) = try open()
        defer { close(fd) }
        let terminal = RawTerminal(fd: input)
        defer { terminal?.restore() }
        writeOut(output, Array("pvmm: attached to \(name) (Ctrl-] detaches; the VM keeps running)\r\n".utf8))
        var decoder = WebSocketDecoder()
        func handle(_ bytes: [UInt8]) throws(ClientError) -> Bool {
            let frames: [WebSocketFrame]
            do { frames = try decoder.feed(bytes) } catch { throw .webSocket(error.description) }
            for f in frames {
                switch f.opcode {
                case .binary, .text, .continuation: writeOut(output, f.payload)
                case .ping: try writeAll(fd, WebSocketFrame(opcode: .pong, payload: f.payload).encoded(mask: mask()))
                case .close:
                    // 4000 + an HTTP status: the daemon refused the attachment (docs/api.md).
                    if f.payload.count >= 2 {
                        let code = Int(f.payload[0]) << 8 | Int(f.payload[1])
                        if code >= 4000 && code < 5000 {
                            throw .api(status: code - 4000, message: String(decoding: f.payload.dropFirst(2), as: UTF8.self),
                                       field: nil)
                        }
                    }
                    return false
                case .pong: break
                }
            }
            return true
        }
        if !pending.isEmpty, !(try handle(pending)) { return false }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: input, events: Int16(POLLIN), revents: 0)]
        var buf = [UInt8](repeating: 0, count: 64 << 10)
        var inputOpen = true
        while true {
            fds[1].fd = inputOpen ? input : -1
            let r = poll(&fds, 2, -1)
            if r < 0 { if errno == EINTR { continue }; throw .io("poll: \(String(cString: strerror(errno)))") }
            if fds[0].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { return false }
                if !(try handle(Array(buf[..<n]))) { return false }
            }
            if inputOpen, fds[1].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
                if n <= 0 { inputOpen = false; continue }
                var bytes = Array(buf[..<n])
                var detach = false
                if let k = bytes.firstIndex(of: Self.detachKey) {
                    bytes = Array(bytes[..<k])
                    detach = true
                }
                if !bytes.isEmpty { try writeAll(fd, WebSocketFrame(opcode: .binary, payload: bytes).encoded(mask: mask())) }
                if detach {
                    try? writeAll(fd, WebSocketFrame(opcode: .close, payload: [0x03, 0xE8]).encoded(mask: mask()))
                    writeOut(output, Array("\r\npvmm: detached from \(name)\r\n".utf8))
                    return true
                }
            }
        }
    }

    func mask() -> (UInt8, UInt8, UInt8, UInt8) {
        let r = randomBytes(4)
        return (r[0], r[1], r[2], r[3])
    }
}

func writeOut(_ fd: Int32, _ bytes: [UInt8]) { try? writeAll(fd, bytes) }

/// The terminal in raw mode while attached (when stdin is one), restored on every exit.
struct RawTerminal {
    let fd: Int32
    let saved: termios

    init?(fd: Int32) {
        guard isatty(fd) == 1 else { return nil }
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else { return nil }
        self.fd = fd
        saved = t
        cfmakeraw(&t)
        tcsetattr(fd, TCSANOW, &t)
    }

    func restore() {
        var t = saved
        tcsetattr(fd, TCSANOW, &t)
    }
}
