#if canImport(Glibc)
import Glibc
#endif
import Devices
import Synchronization
import VMControl

/// The console-output and control-socket thread ("pvmm-console", role console).
///
/// The 8250 and virtio-console write into `ring` and never wait; this loop drains the
/// ring to every reader with non-blocking writes: stdout (`pvmm run`), attached console
/// clients, `logs` followers. Each reader keeps its own ring position, so its backlog is
/// bounded by the ring: one that falls more than the ring's size behind skips the bytes
/// it missed (counted in `dropped`) and goes on with the newest. The control socket's
/// requests are served here too (ControlServer.swift).
///
/// `@unchecked Sendable`: `connections`, `scratch` and `listener` belong to the loop
/// thread (set up before it starts, torn down after it stopped); other threads only
/// touch `events` (a Mutex) and the eventfds.
public final class ConsoleHub: @unchecked Sendable {
    public let ring: ConsoleRing
    /// pvmm's own messages from vCPU and device threads (a device entering
    /// DEVICE_NEEDS_RESET): drained to stderr like the console to stdout, so a slow stderr
    /// never stalls a vCPU.
    public let logRing: ConsoleRing
    /// The pid `status` reports, the process to signal: taken when the hub is made, before
    /// a jail forks (then it is the jail's supervisor; the VMM is pid 1 of its namespace).
    let pid = getpid()
    /// Writes the files of a control socket's `snapshot` (made by `listen`, before the
    /// seccomp filter; its thread starts with the loop).
    var snapshotWriter: SnapshotWriter?
    let loop: EventLoop
    let ringWake: EventFD
    let eventWake: EventFD
    /// State changes queued by the VM's observer, written to `events` subscribers.
    let events = Mutex<[VMStateEvent]>([])
    /// A handful at most (stdout, a few clients): an array, scanned.
    var connections: [Connection] = []
    /// One write's worth of ring bytes (a pipe takes 4 KiB at a time anyway).
    var scratch = [UInt8](repeating: 0, count: 4096)
    var listener: Int32 = -1
    var socketPath: String?
    /// Set once the VM exists (control requests need it; output does not).
    var vm: VM?
    /// Bytes readers skipped because they fell behind by more than the ring holds.
    let dropped = Atomic<UInt64>(0)
    var signalKeeper: EventFD?
    /// How often to retry console input the guest had no room for.
    static let inputRetryMs: Int32 = 5

    public init(capacity: Int = ConsoleRing.defaultCapacity) throws(VMMError) {
        ringWake = try EventFD()
        eventWake = try EventFD()
        ring = ConsoleRing(capacity: capacity, wake: ringWake)
        logRing = ConsoleRing(capacity: 16 << 10, wake: ringWake)
        loop = try EventLoop(name: "pvmm-console", role: .console)
        try loop.add(ringWake.fd) { [unowned self] in
            _ = ringWake.drain()
            ring.rearm()
            logRing.rearm()
            for c in connections where c.cursor != nil { flush(c) }
        }
        try loop.add(eventWake.fd) { [unowned self] in
            _ = eventWake.drain()
            deliverEvents()
        }
        loop.onTimeout = { [unowned self] in retryInput() }
    }

    /// The VM's state observer: queues the event for the loop (never blocks).
    public func stateChanged(_ e: VMStateEvent) {
        events.withLock { $0.append(e) }
        eventWake.signal()
    }

    /// Streams the console to stdout (`pvmm run`), without ever blocking the loop: a
    /// pipe or terminal is reopened non-blocking (its own file description, so the
    /// parent's stdout keeps its flags); a regular file never blocks anyway.
    public func attachStdout() throws(VMMError) {
        try attachOutput(fd: STDOUT_FILENO, source: ring)
    }

    /// Drains `logRing` to stderr (see `log`).
    public func attachStderr() throws(VMMError) {
        try attachOutput(fd: STDERR_FILENO, source: logRing)
    }

    /// A message line from any thread; it reaches stderr without blocking the caller.
    @Sendable public func log(_ line: String) {
        var s = line.hasSuffix("\n") ? line : line + "\n"
        s.withUTF8 { logRing.write(UnsafeRawBufferPointer($0)) }
    }

    func attachOutput(fd: Int32, source: ConsoleRing) throws(VMMError) {
        let out = StdoutWriter.open(fd)
        let c = Connection(fd: out.fd, kind: .stdout(out), source: source)
        c.cursor = source.start
        connections.append(c)
        // A regular file cannot be polled (and never blocks): it is just written.
        do { try loop.add(c.fd, events: []) { [unowned self] ev in writable(c, ev) } } catch { c.pollable = false }
    }

    /// SIGTERM, SIGINT and SIGHUP end the VM as `stop` would (exit.json written), handled
    /// on this thread: the handler only writes an eventfd. For `--no-stdio`, where no
    /// terminal handler owns these signals.
    public func stopOnTerminationSignals() throws(VMMError) {
        let e = try EventFD()
        terminationEvent = e.fd
        try loop.add(e.fd) { [unowned self] in
            _ = e.drain()
            vm?.stop()
        }
        signalKeeper = e
        // A parent may have blocked them (threads started later inherit this mask).
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig) { _ in
                var one: UInt64 = 1
                _ = Glibc.write(terminationEvent, &one, 8)
            }
        }
    }

    /// Starts the loop. With a control socket, also the snapshot writer's thread, from
    /// this (the main) thread: see SnapshotWriter.
    public func start(vm: VM) throws(VMMError) {
        self.vm = vm
        try snapshotWriter?.start()
        try loop.start()
    }

    /// Ends the loop, then (on the caller's thread) gives every reader a last chance
    /// to take the final output and events, at most `graceMs`, and closes everything.
    public func finish(graceMs: Int = 2000) {
        loop.stop()
        deliverEvents()
        let deadline = monotonicNanoseconds() + UInt64(graceMs) * 1_000_000
        var open = connections
        while !open.isEmpty && monotonicNanoseconds() < deadline {
            for c in open { flush(c, final: true) }
            open = open.filter { !$0.closed && $0.hasBacklog }
            if open.isEmpty { break }
            var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLOUT), revents: 0) }
            _ = poll(&fds, nfds_t(fds.count), 50)
        }
        for c in connections { close(c) }
        if listener >= 0 { Glibc.close(listener) }
        if let socketPath { unlink(socketPath) }
    }

    // MARK: Writing

    /// Writes what `c` is owed: queued protocol bytes first, then ring bytes from its
    /// position. Stops at EAGAIN and waits for EPOLLOUT.
    func flush(_ c: Connection, final: Bool = false) {
        guard !c.closed else { return }
        var blocked = false
        outer: while true {
            if !c.out.isEmpty {
                let n = c.out.withUnsafeBytes { c.write($0) }
                if n < 0 { if n == -1 { blocked = true; break outer }; close(c); return }
                c.out.removeFirst(n)
                continue
            }
            guard let from = c.cursor else { break }
            let r = scratch.withUnsafeMutableBytes { c.source.read(from: from, into: $0, limit: c.limit) }
            if r.skipped > 0 {
                c.skipped += r.skipped
                dropped.wrappingAdd(r.skipped, ordering: .relaxed)
            }
            c.cursor = r.next
            if r.count == 0 { break }
            let n = scratch.withUnsafeBytes { c.write(UnsafeRawBufferPointer(rebasing: $0[..<r.count])) }
            if n < 0 {
                c.cursor = r.next - UInt64(r.count)
                if n == -1 { blocked = true; break }
                close(c); return
            }
            c.cursor = r.next - UInt64(r.count - n)
            if n < r.count { blocked = true; break }
        }
        if c.closeWhenFlushed && !c.hasBacklog {
            close(c)
            return
        }
        if !final { setWriteInterest(c, blocked) }
    }

    func setWriteInterest(_ c: Connection, _ on: Bool) {
        guard on != c.wantsWrite else { return }
        c.wantsWrite = on
        updateInterest(c)
    }

    func updateInterest(_ c: Connection) {
        guard c.pollable else { return }
        var ev: IOEvents = c.wantsWrite ? .writable : []
        if c.reading && c.pendingInput.isEmpty { ev.insert(.readable) }
        loop.setInterest(c.fd, ev)
    }

    func writable(_ c: Connection, _ ev: IOEvents) {
        if ev.contains(.hangup) && !ev.contains(.readable) { return close(c) }
        if ev.contains(.readable) { readable(c) }
        if !c.closed && ev.contains(.writable) { flush(c) }
    }

    func close(_ c: Connection) {
        guard !c.closed else { return }
        c.closed = true
        if c.pollable { loop.remove(c.fd) }
        for i in connections.indices where connections[i].fd == c.fd {
            connections.remove(at: i)
            break
        }
        c.closeFD()
    }

    // MARK: Events

    func deliverEvents() {
        let batch = events.withLock { e -> [VMStateEvent] in
            defer { e.removeAll() }
            return e
        }
        // Encoded only for subscribers: `pvmm run` has none and its code pages stay cold.
        guard !batch.isEmpty, connections.contains(where: { $0.subscribed }) else { return }
        let lines = batch.flatMap { $0.json.line }
        for c in connections where c.subscribed {
            // A subscriber that stopped reading must not hold our memory: drop it.
            if c.out.count + lines.count > Connection.maxQueued { close(c); continue }
            c.out += lines
            flush(c)
        }
    }
}

/// The eventfd a termination signal's handler writes (async-signal-safe: a plain fd).
nonisolated(unsafe) var terminationEvent: Int32 = -1

/// One reader or client of the hub.
final class Connection {
    enum Kind {
        case stdout(StdoutWriter)
        case socket
    }

    static let maxQueued = 64 << 10

    let fd: Int32
    let kind: Kind
    /// The ring this connection streams from (the console, or the log for stderr).
    let source: ConsoleRing
    var closed = false
    /// Bytes of the request line so far (nil once it has been handled).
    var request: [UInt8]? = []
    /// Files passed with the request (SCM_RIGHTS): a snapshot's; closed once it is handled.
    var passedFDs: [Int32] = []
    /// Protocol bytes (the response line, event lines) to send before ring bytes.
    var out: [UInt8] = []
    /// Position in the ring when this connection streams console output.
    var cursor: UInt64?
    /// `logs` without follow: stop at this position, then close.
    var limit: UInt64 = .max
    var closeWhenFlushed = false
    /// Subscribed to state changes (`events`).
    var subscribed = false
    /// Reading from the socket: the request line, or console input once attached.
    var reading = true
    /// Attached console: bytes it sends go to the guest.
    var sendsInput = false
    var pendingInput: [UInt8] = []
    var wantsWrite = false
    var pollable = true
    var skipped: UInt64 = 0

    init(fd: Int32, kind: Kind, source: ConsoleRing) {
        self.fd = fd
        self.kind = kind
        self.source = source
        if case .stdout = kind { request = nil; reading = false }
    }

    var hasBacklog: Bool {
        !out.isEmpty || (cursor.map { $0 < min(limit, source.end) } ?? false)
    }

    /// Bytes written, -1 for "would block", -2 for "gone".
    func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard !bytes.isEmpty else { return 0 }
        switch kind {
        case .stdout(let w): return w.write(bytes)
        case .socket:
            while true {
                let n = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if n >= 0 { return n }
                if errno == EINTR { continue }
                return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2
            }
        }
    }

    func closeFD() {
        switch kind {
        case .stdout(let w): w.close()
        case .socket: Glibc.close(fd)
        }
        passedFDs.forEach { _ = Glibc.close($0) }
        passedFDs = []
    }
}

/// stdout or stderr, written without blocking the console thread (see `ConsoleHub.attachStdout`).
final class StdoutWriter {
    /// Ours to close: a non-blocking reopen of the stream (its own file description) or a dup.
    let fd: Int32
    let isSocket: Bool

    private init(fd: Int32, isSocket: Bool) {
        self.fd = fd
        self.isSocket = isSocket
    }

    static func open(_ std: Int32) -> StdoutWriter {
        var st = stat()
        if fstat(std, &st) == 0 {
            let type = st.st_mode & S_IFMT
            if type == S_IFSOCK { return StdoutWriter(fd: dup(std), isSocket: true) }
            if type == S_IFIFO || type == S_IFCHR {
                let fd = Glibc.open(std == STDERR_FILENO ? "/proc/self/fd/2" : "/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
                if fd >= 0 { return StdoutWriter(fd: fd, isSocket: false) }
            }
        }
        // A regular file (writes do not block), or nothing better: a dup of it.
        return StdoutWriter(fd: dup(std), isSocket: false)
    }

    /// As Connection.write.
    func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        while true {
            let n = isSocket ? send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                             : Glibc.write(fd, bytes.baseAddress, bytes.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2
        }
    }

    func close() { Glibc.close(fd) }
}
