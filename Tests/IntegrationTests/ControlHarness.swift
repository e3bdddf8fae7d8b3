import CSys
import Foundation
import Testing

/// A small client of a VMM's control socket (docs/control.md): one connection, one
/// request line, one response line, then (for streams) raw bytes. Every read has a
/// deadline; `deinit` closes the socket.
final class ControlConnection {
    let fd: Int32
    /// What arrived after the response line (a stream's bytes).
    private(set) var stream: [UInt8] = []
    private var pending: [UInt8] = []

    init(path: String, timeout: Double = 5) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard s >= 0 else { throw HarnessError(description: "socket: \(errno)") }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc == 0 {
                fd = s
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                return
            }
            close(s)
            if Date() >= deadline { throw HarnessError(description: "connect \(path): errno \(errno)") }
            usleep(10_000)
        }
    }

    deinit { close(fd) }

    /// One request with `files` passed along (SCM_RIGHTS), as the daemon sends a snapshot's.
    func request(_ json: String, passing files: [Int32], timeout: Double = 10) throws -> [String: Any] {
        let line = Array((json + "\n").utf8)
        let sent = line.withUnsafeBytes { b in files.withUnsafeBufferPointer { csys_send_fds(fd, b.baseAddress, UInt64(b.count), $0.baseAddress, Int32($0.count)) } }
        guard sent == line.count else { throw HarnessError(description: "sendmsg: \(sent)") }
        return try request(nil, timeout: timeout)
    }

    func send(_ s: String) {
        let b = Array(s.utf8)
        var off = 0
        while off < b.count {
            let n = b[off...].withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n } else if errno == EAGAIN { usleep(1000) } else { return }
        }
    }

    /// Reads what is available within `ms`; false once the peer closed.
    @discardableResult
    func pump(ms: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, ms) > 0 else { return true }
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buf, buf.count, 0)
        if n > 0 { pending += buf[..<n]; return true }
        return n < 0 && errno == EAGAIN
    }

    /// Sends `request` and returns the response line, parsed.
    /// Sends `json` (nil: already sent) and reads the response line.
    func request(_ json: String?, timeout: Double = 10) throws -> [String: Any] {
        if let json { send(json + "\n") }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let nl = pending.firstIndex(of: 0x0A) {
                let line = Data(pending[..<nl])
                stream = Array(pending[(nl + 1)...])
                pending = []
                guard let obj = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                    throw HarnessError(description: "not an object: \(String(decoding: line, as: UTF8.self))")
                }
                return obj
            }
            if !pump(ms: 20) && !pending.contains(0x0A) {
                throw HarnessError(description: "closed before a response to \(json ?? "it"): \(String(decoding: pending, as: UTF8.self))")
            }
        }
        throw HarnessError(description: "no response to \(json ?? "it") within \(timeout) s")
    }

    var text: String { String(decoding: stream, as: UTF8.self) }

    /// Reads the stream until it contains `needle` after byte `from`.
    @discardableResult
    func expect(_ needle: String, after from: Int = 0, timeout: Double = 10) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            stream += pending
            pending = []
            let s = String(decoding: stream[min(from, stream.count)...], as: UTF8.self)
            if let r = s.range(of: needle) { return String(s[..<r.upperBound]) }
            if Date() >= deadline { throw HarnessError(description: "timed out waiting for \(needle.debugDescription) on the console: \(s.suffix(400).debugDescription)") }
            if !pump(ms: 20) {
                stream += pending; pending = []
                if String(decoding: stream[min(from, stream.count)...], as: UTF8.self).contains(needle) { continue }
                throw HarnessError(description: "stream closed before \(needle.debugDescription): \(s.suffix(400).debugDescription)")
            }
        }
    }

    /// Reads until the peer closes (deadline-bounded); returns everything streamed.
    func readToEnd(timeout: Double = 10) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while pump(ms: 20) {
            if Date() >= deadline { throw HarnessError(description: "stream still open after \(timeout) s") }
        }
        stream += pending
        pending = []
        return stream
    }

    /// Sends a console line and waits for the next prompt; returns the output between.
    func command(_ line: String, timeout: Double = 10) throws -> String {
        let mark = stream.count + pending.count
        send(line + "\n")
        return try expect("pvos> ", after: mark, timeout: timeout)
    }
}

/// `pvmm-vmm` as the daemon runs it: definition in a file, control socket and state
/// directory in a fresh temporary directory, no stdio, guest resets reboot.
final class ControlledVM {
    let dir: String
    let child: Child
    var socket: String { dir + "/control.sock" }

    init(_ definition: [String: Any] = [:], extra: [String] = ["--on-reset", "restart"]) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-ctl-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var def: [String: Any] = ["kernel": Paths.guest]
        for (k, v) in definition { def[k] = v }
        let config = dir + "/vm.json"
        try JSONSerialization.data(withJSONObject: def).write(to: URL(fileURLWithPath: config))
        child = try Child([Paths.binDir + "/pvmm-vmm", "--config", config, "--control", dir + "/control.sock",
                           "--state-dir", dir, "--no-stdio"] + extra)
    }

    /// `pvmm-vmm --restore SNAPSHOT` run the same way (docs/snapshot.md).
    init(restoring snapshot: String, extra: [String] = []) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-ctl-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        child = try Child([Paths.binDir + "/pvmm-vmm", "--restore", snapshot, "--control", dir + "/control.sock",
                           "--state-dir", dir, "--no-stdio"] + extra)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func connect() throws -> ControlConnection { try ControlConnection(path: socket) }

    func request(_ json: String, timeout: Double = 10) throws -> [String: Any] {
        try connect().request(json, timeout: timeout)
    }

    /// A console client attached with replay, after the shell's first prompt.
    func attach(replay: Bool = true) throws -> ControlConnection {
        let c = try connect()
        let r = try c.request(#"{"op":"console","replay":\#(replay)}"#)
        guard r["ok"] as? Bool == true else { throw HarnessError(description: "console: \(r)") }
        return c
    }

    func waitForPrompt() throws -> ControlConnection {
        let c = try attach()
        try c.expect("pvos> ")
        return c
    }

    var exitRecord: [String: Any]? {
        guard let d = FileManager.default.contents(atPath: dir + "/exit.json") else { return nil }
        return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
    }

    var consoleLog: String { String(decoding: FileManager.default.contents(atPath: dir + "/console.log") ?? Data(), as: UTF8.self) }
}
