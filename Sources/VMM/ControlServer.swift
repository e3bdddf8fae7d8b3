#if canImport(Glibc)
import Glibc
#endif
import CSys
import Devices
import VMControl
import VMDefinition

/// The control socket (docs/control.md), served on the console hub's thread: accept,
/// read one request line, answer it, then stream (events, console, logs) or close.
///
/// Lifecycle requests block this thread until the state is reached (pause: all vCPUs
/// parked, microseconds; reboot: the kernel reloaded, milliseconds). Nothing the VM's
/// vCPU or device threads do waits on this thread, so that cannot deadlock; console
/// output arriving meanwhile waits in the ring.
extension ConsoleHub {
    /// Serves the control socket at `path`: unlinked and re-created, mode 0600.
    public func listen(path: String) throws(VMMError) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let room = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < room, !bytes.contains(0) else {
            throw .invalidConfig(ConfigError(field: "control", message: "'\(path)': a socket path is 1 to \(room - 1) bytes"))
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if fd < 0 { throw .thread("control socket: \(String(cString: strerror(errno)))") }
        unlink(path)
        // 0600 from the start: no window in which another user could connect.
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(old)
        guard rc == 0, Glibc.listen(fd, 64) == 0 else {
            let e = String(cString: strerror(errno))
            Glibc.close(fd)
            throw .invalidConfig(ConfigError(field: "control", message: "\(path): \(e)"))
        }
        chmod(path, 0o600)
        listener = fd
        socketPath = path
        snapshotWriter = try SnapshotWriter()
        try loop.add(fd) { [unowned self] in accept() }
    }

    func accept() {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd < 0 { return }  // EAGAIN: none left (or a transient error: try on the next event)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let c = Connection(fd: fd, kind: .socket, source: ring)
            do { try loop.add(fd, events: .readable) { [unowned self] ev in writable(c, ev) } } catch {
                Glibc.close(fd)
                continue
            }
            connections.append(c)
        }
    }

    /// Something to read from `c`: its request line, console input, or its end.
    func readable(_ c: Connection) {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n: Int
        if c.request != nil {
            // The request may come with files (SCM_RIGHTS): a snapshot's two, made by the
            // client. Later bytes (console input) are read without: the kernel drops any fd.
            var fds: [Int32] = [0, 0]
            var count: Int32 = 0
            let r = buf.withUnsafeMutableBytes { csys_recv_fds(c.fd, $0.baseAddress, UInt64($0.count), &fds, 2, &count) }
            c.passedFDs += fds[0..<Int(count)]
            if r < 0 { errno = Int32(-r) }
            n = r < 0 ? -1 : Int(r)
        } else {
            n = buf.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        }
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
            // The client went away (detach): a stream ends, the VM runs on.
            return close(c)
        }
        guard n > 0 else { return }
        if var line = c.request {
            line += buf[..<n]
            if let nl = line.firstIndex(of: 0x0A) {
                c.request = nil
                let rest = Array(line[(nl + 1)...])
                handle(c, line: line[..<nl])
                // Files that came with a request that takes none are not kept.
                c.passedFDs.forEach { _ = Glibc.close($0) }
                c.passedFDs = []
                if !c.closed && c.sendsInput && !rest.isEmpty { deliverInput(c, rest) }
            } else if line.count > ControlRequest.maxLineBytes {
                c.request = nil
                respondAndClose(c, ControlError(.invalid, "request line longer than \(ControlRequest.maxLineBytes) bytes").response)
            } else {
                c.request = line
            }
            return
        }
        if c.sendsInput { deliverInput(c, Array(buf[..<n])) }
        // Other streams ignore what the client sends.
    }

    // MARK: Console input

    func deliverInput(_ c: Connection, _ bytes: [UInt8]) {
        guard let vm else { return }
        c.pendingInput += bytes
        let n = c.pendingInput.withUnsafeBytes { vm.sendConsoleInput($0) }
        c.pendingInput.removeFirst(n)
        if !c.pendingInput.isEmpty {
            // The guest has no room: stop reading this client (back-pressure) and retry.
            updateInterest(c)
            loop.timeoutMs = Self.inputRetryMs
        }
    }

    func retryInput() {
        guard let vm else { return }
        var waiting = false
        for c in connections where !c.pendingInput.isEmpty {
            let n = c.pendingInput.withUnsafeBytes { vm.sendConsoleInput($0) }
            c.pendingInput.removeFirst(n)
            if c.pendingInput.isEmpty { updateInterest(c) } else { waiting = true }
        }
        if !waiting { loop.timeoutMs = -1 }
    }

    // MARK: Requests

    func respondAndClose(_ c: Connection, _ v: JSONValue) {
        c.out += v.line
        c.closeWhenFlushed = true
        c.reading = false
        flush(c)
    }

    func handle(_ c: Connection, line: ArraySlice<UInt8>) {
        guard let vm else { return respondAndClose(c, ControlError(.host, "the VM is not built yet").response) }
        let request: ControlRequest
        do { request = try ControlRequest(line: line) } catch { return respondAndClose(c, error.response) }
        do throws(VMMError) {
            switch request {
            case .status: respondAndClose(c, controlOK(statusMembers(vm)))
            case .stats: respondAndClose(c, controlOK(statsMembers(vm)))
            case .pause:
                try vm.pause()
                respondAndClose(c, controlOK(stateMembers(vm)))
            case .resume:
                try vm.resume()
                respondAndClose(c, controlOK(stateMembers(vm)))
            case .reboot:
                try vm.reboot()
                respondAndClose(c, controlOK(stateMembers(vm)))
            case .stop(let timeout):
                try vm.requestStop(timeoutSeconds: timeout)
                // The state the request entered: a quick guest may be gone already.
                respondAndClose(c, controlOK([("state", .string(VMState.stopping.rawValue))]))
            case .kill:
                try vm.kill()
                respondAndClose(c, controlOK(stateMembers(vm)))
            case .snapshot(let path):
                let files = c.passedFDs
                c.passedFDs = []
                defer { files.forEach { _ = Glibc.close($0) } }
                let target: SnapshotTarget
                switch files.count {
                case 0: target = .directory(path)
                case 2: target = .files(memory: files[0], state: files[1])
                default: throw .snapshot(.file(path: path, message: "pass no file or two (memory, state) with the request"))
                }
                let r = try vm.snapshot(to: target, consoleLog: ring.contents(), consoleEnd: ring.end, writer: snapshotWriter)
                respondAndClose(c, controlOK([("path", .string(path)), ("state", .string(vm.state.rawValue)),
                                              ("memory_bytes", .int(r.memoryBytes)), ("state_bytes", .int(r.stateBytes)),
                                              ("paused_us", .int(r.pausedNs / 1000)), ("settled_requests", .int(r.settledRequests))]))
            case .events:
                c.subscribed = true
                c.out += controlOK().line
                flush(c)
            case .console(let replay):
                let (start, end) = (ring.start, ring.end)
                c.out += controlOK([("replayed", .int(replay ? end - start : 0)), ("overwritten", .int(start))]).line
                c.cursor = replay ? start : end
                c.sendsInput = true
                flush(c)
            case .logs(let follow):
                let (start, end) = (ring.start, ring.end)
                c.out += controlOK([("replayed", .int(end - start)), ("overwritten", .int(start))]).line
                c.cursor = start
                if !follow {
                    c.limit = end
                    c.closeWhenFlushed = true
                }
                flush(c)
            }
        } catch {
            respondAndClose(c, error.controlError.response)
        }
    }

    /// The state an operation left the VM in, with the seq of the change that entered it
    /// (read together): an answer can reach the daemon before an event of an earlier
    /// change (a reboot's `starting` after its `running`), which the seq lets it drop.
    func stateMembers(_ vm: VM) -> [(key: String, value: JSONValue)] {
        let s = vm.status
        return [("state", .string(s.state.rawValue)), ("state_seq", .int(s.stateSeq))]
    }

    func statusMembers(_ vm: VM) -> [(key: String, value: JSONValue)] {
        let s = vm.status
        var m: [(key: String, value: JSONValue)] = [
            ("state", .string(s.state.rawValue)), ("pid", .int(pid)), ("cpus", .int(vm.config.cpus)),
            ("memory_mib", .int(vm.config.memoryMiB)), ("started_ns", .int(s.startedNs)), ("uptime_ns", .int(s.uptimeNs)),
            ("state_seq", .int(s.stateSeq)),
        ]
        if let name = vm.config.name { m.insert(("name", .string(name)), at: 0) }
        return m
    }

    func statsMembers(_ vm: VM) -> [(key: String, value: JSONValue)] {
        let s = vm.stats
        let devices: [JSONValue] = s.devices.map { d in
            .object([("name", .string(d.name)), ("requests", .int(d.requests.value)),
                     ("notifications", .int(d.notifications.value)), ("interrupts", .int(d.interrupts.value)),
                     ("errors", .int(d.errors.value))])
        }
        return [
            ("exits", .object([("pio", .int(s.pio.value)), ("mmio", .int(s.mmio.value)), ("hlt", .int(0)),  // the in-kernel LAPIC handles HLT: never an exit (docs/control.md)
                               ("interrupted", .int(s.interrupted.value))])),
            ("devices", .array(devices)),
            ("console", .object([("bytes", .int(ring.end)), ("dropped", .int(dropped.load(ordering: .relaxed))),
                                 ("overwritten", .int(ring.overwritten))])),
        ]
    }
}

extension VMMError {
    /// The error as the control socket reports it: whose fault, in `kind`.
    public var controlError: ControlError {
        switch self {
        case .conflict(let c): ControlError(.conflict, c.description)
        case .invalidConfig(let e): ControlError(.invalid, e.message, field: e.field)
        case .kernelUnreadable, .badKernel: ControlError(.invalid, description, field: "kernel")
        case .network(let field, _): ControlError(.invalid, description, field: field)
        case .kvmUnavailable, .kvm, .memory, .thread, .snapshotWrite: ControlError(.host, description)
        case .snapshot: ControlError(.invalid, description, field: "path")
        }
    }
}

extension VMStateEvent {
    /// `{"state":S,"ts_ns":T}` plus, on the final event, how the VM ended.
    public var json: JSONValue {
        var m: [(key: String, value: JSONValue)] = [("state", .string(state.rawValue)), ("ts_ns", .int(timestampNs)), ("seq", .int(seq))]
        if let exit { m += exit.recordMembers.filter { $0.key != "state" } }
        return .object(m)
    }
}

extension VMExit {
    /// exit.json: `{"state":"stopped","exit_status":0}` or
    /// `{"state":"crashed","reason":"...","rip":"0x...","vector":14}`.
    public var record: JSONValue { .object(recordMembers) }

    var recordMembers: [(key: String, value: JSONValue)] {
        var m: [(key: String, value: JSONValue)] = [("state", .string(finalState.rawValue)), ("exit_status", .int(exitStatus))]
        switch self {
        case .poweredOff: break
        case .reset: m.append(("reason", .string("guest reset")))
        case .stopped, .killed, .stopTimedOut: m.append(("reason", .string(description)))
        case .crashed(let r):
            m.append(("reason", .string(r.reason)))
            m.append(("rip", .string("0x" + String(r.rip, radix: 16))))
            if let v = r.vector { m.append(("vector", .int(v))) }
        case .failed(let msg): m.append(("reason", .string("vmm error: " + msg)))
        }
        return m
    }
}
