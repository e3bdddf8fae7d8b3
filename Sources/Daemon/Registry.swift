import Foundation
import Logging
import Sandbox
import VMControl
import HostNet
import Snapshot
import VMDefinition

/// One VM the daemon manages.
struct ManagedVM {
    var config: VMConfig
    var record: VMRecord
    /// Identifies the current VMM run: callbacks from an older run (a late event line, the
    /// watcher of a process already replaced) carry an older token and are ignored.
    var token: UInt64 = 0
    /// Counts states applied from the VMM's event stream: a command's answer is applied
    /// only if no event came in meanwhile (the stream is newer than a late answer).
    var eventSeq: UInt64 = 0
    /// The VMM's seq of the last state applied (its `status` state_seq, its events' seq):
    /// the status read when following starts can be newer than events queued on the
    /// stream already, which must not move the state back (running -> starting).
    var vmmSeq: UInt64 = 0
}

/// A state change, as /v1/events streams it and waits observe it.
public struct VMEvent: Sendable {
    public var name: String
    public var state: String
    public var json: JSONValue
}

/// The daemon's VMs: definitions, states, VMM processes. All mutation happens on this
/// actor; talking to a VMM (which may be slow) happens outside it, with the run's token.
public actor Registry {
    public let stateDir: String
    let vmmExecutable: String
    let logger: Logger
    var vms: [String: ManagedVM] = [:]
    private var subscribers: [UInt64: AsyncStream<VMEvent>.Continuation] = [:]
    private var nextID: UInt64 = 1
    nonisolated(unsafe) var watcher: ProcessWatcher!
    let hostMemoryMiB: Int
    /// Console and follow-logs streams, closed at shutdown.
    public let streams = StreamSet()
    private var shuttingDown = false

    /// Given to every VMM (`--jail`), and per VM name for tests (`--test-vmm-args`).
    let vmmArguments: [String]
    let testVMMArguments: [String: [String]]

    public init(stateDir: String, vmmExecutable: String, logger: Logger, vmmArguments: [String] = [],
                testVMMArguments: [String: [String]] = [:]) {
        self.stateDir = stateDir
        self.vmmExecutable = vmmExecutable
        self.vmmArguments = vmmArguments
        self.testVMMArguments = testVMMArguments
        self.logger = logger
        hostMemoryMiB = Int(ProcessInfo.processInfo.physicalMemory >> 20)
    }

    /// Must run once before serving: starts the process watcher, loads every VM and
    /// re-adopts the VMMs a previous daemon left running.
    public func start() async {
        let w = ProcessWatcher { [weak self] pid, token, end in
            guard let self else { return }
            Task { await self.processEnded(pid: pid, token: token, end: end) }
        }
        watcher = w
        try? FileManager.default.createDirectory(atPath: stateDir + "/vms", withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        let names = (try? FileManager.default.contentsOfDirectory(atPath: stateDir + "/vms")) ?? []
        for name in names.sorted() {
            let paths = VMPaths(stateDir: stateDir, name: name)
            guard let bytes = StateFiles.read(paths.config) else { continue }
            let config: VMConfig
            do { config = try VMConfig(json: bytes) } catch {
                logger.error("skipping a VM whose definition does not decode", metadata: ["vm": "\(name)", "error": "\(error)"])
                continue
            }
            var record = StateFiles.readJSON(paths.record).flatMap(VMRecord.init(json:))
                ?? VMRecord(state: .created, createdNs: wallClockNanoseconds())
            var vm = ManagedVM(config: config, record: record)
            if record.state.isActive {
                if let pid = record.pid, let start = record.pidStart, processStartTime(pid) == start {
                    vm.token = newToken()
                    vms[name] = vm
                    logger.info("re-adopting a running VM", metadata: ["vm": "\(name)", "pid": "\(pid)"])
                    watcher.watch(pid: pid, child: false, token: vm.token)
                    follow(name: name, token: vm.token, control: paths.control, adopting: true)
                    continue
                }
                // It ended while no daemon watched: record how, from what it left.
                let (state, exit) = endRecord(exitJSON: StateFiles.readJSON(paths.exit), end: .unknown,
                                              logTail: lastLogLine(paths.log))
                record.end(state: state, exit: exit)
                vm.record = record
                unlink(paths.pidFile)
            }
            vms[name] = vm
            persist(name)
        }
        logger.info("loaded VMs", metadata: ["count": "\(vms.count)", "state_dir": "\(stateDir)"])
        Task { [weak self] in
            while let self {
                try? await Task.sleep(for: .seconds(15))
                await self.heartbeat()
            }
        }
    }

    private func newToken() -> UInt64 {
        nextID += 1
        return nextID
    }

    // MARK: Queries

    func get(_ name: String) throws(APIError) -> ManagedVM {
        guard let vm = vms[name] else { throw .notFound(name) }
        return vm
    }

    public func info(_ name: String) throws(APIError) -> JSONValue { try Self.json(name: name, vm: get(name)) }

    public func list() -> JSONValue {
        .array(vms.keys.sorted().map { Self.json(name: $0, vm: vms[$0]!) })
    }

    public func names() -> [String] { vms.keys.sorted() }

    static func json(name: String, vm: ManagedVM) -> JSONValue {
        let r = vm.record
        let m: [(key: String, value: JSONValue)] = [
            ("name", .string(name)), ("state", .string(r.state.rawValue)), ("config", vm.config.json),
            ("pid", r.pid.map { .int($0) } ?? .null), ("uptime_ns", .int(r.uptimeNs())),
            ("created_ns", .int(r.createdNs)), ("started_ns", r.startedNs.map { .int($0) } ?? .null),
            ("last_exit", r.lastExit ?? .null),
        ]
        return .object(m)
    }

    /// The control socket of a VM whose state is one of `allowed` (else 409 naming it),
    /// with the token of its current run.
    public func target(_ name: String, allowed: Set<VMState>, action: String) throws(APIError) -> Target {
        let vm = try get(name)
        guard allowed.contains(vm.record.state) else {
            throw .conflict("cannot \(action) '\(name)': it is \(vm.record.state.rawValue)", field: "state")
        }
        return Target(control: VMPaths(stateDir: stateDir, name: name).control, token: vm.token, pid: vm.record.pid,
                      eventSeq: vm.eventSeq)
    }

    public struct Target: Sendable {
        public let control: String, token: UInt64, pid: Int32?, eventSeq: UInt64
    }

    /// Applies the state a command's answer reports, unless the event stream has said
    /// something since the command was sent.
    public func observeAnswer(_ name: String, target: Target, answer: JSONValue) {
        guard let vm = vms[name], vm.eventSeq == target.eventSeq else { return }
        observe(name, token: target.token, status: answer, fromEvents: false)
    }

    public func state(_ name: String) -> VMState? { vms[name]?.record.state }

    // MARK: Create and delete

    public func create(_ body: [UInt8]) throws(APIError) -> JSONValue {
        var config: VMConfig
        let restore = try Self.restoreDirectory(body)
        if let restore {
            config = try Self.snapshotDefinition(restore.dir)
            config.name = restore.name
        } else {
            do { config = try VMConfig(json: body) } catch { throw .invalid(error) }
        }
        guard let name = config.name else { throw APIError(.badRequest, "a VM needs a name", field: "name") }
        do { try config.validate(hostMemoryMiB: hostMemoryMiB, hostMaxVCPUs: 255) } catch { throw .invalid(error) }
        if vms[name] != nil { throw .conflict("a VM named '\(name)' exists", field: "name") }
        try Self.checkFiles(config)
        try TapOpener.check(config)
        try checkDiskSharing(config)
        let paths = VMPaths(stateDir: stateDir, name: name)
        do {
            guard mkdir(paths.dir, 0o700) == 0 || errno == EEXIST else {
                throw StateFiles.Failure(path: paths.dir, call: "mkdir", errno: errno)
            }
            try StateFiles.write(config.jsonBytes, to: paths.config)
            if let restore { try StateFiles.write(Array(restore.dir.utf8), to: paths.restore) } else { unlink(paths.restore) }
        } catch {
            throw APIError(.internalServerError, "cannot write the definition under \(paths.dir): \(error)")
        }
        vms[name] = ManagedVM(config: config, record: VMRecord(state: .created, createdNs: wallClockNanoseconds()))
        persist(name)
        publish(name, extra: [])
        return Self.json(name: name, vm: vms[name]!)
    }

    /// `{"name": N, "restore": DIR}`: a VM created from a snapshot (docs/snapshot.md);
    /// nil for an ordinary definition. Other members are refused: the snapshot is the VM.
    static func restoreDirectory(_ body: [UInt8]) throws(APIError) -> (name: String, dir: String)? {
        guard let value = try? JSONValue(parsing: body), case .object(let members) = value,
              members.contains(where: { $0.key == "restore" }) else { return nil }
        for m in members where m.key != "name" && m.key != "restore" {
            throw APIError(.badRequest, "not allowed with restore (the snapshot defines the VM)", field: m.key)
        }
        guard let dir = value["restore"]?.stringValue, dir.hasPrefix("/") else {
            throw APIError(.badRequest, "an absolute path of a snapshot directory", field: "restore")
        }
        guard let name = value["name"]?.stringValue else { throw APIError(.badRequest, "a VM needs a name", field: "name") }
        do { try VMConfig.validate(name: name) } catch { throw .invalid(error) }
        return (name, dir)
    }

    /// The definition inside DIR/state, with the whole state checked (a corrupt or foreign
    /// snapshot is refused now, naming the field, not at start).
    static func snapshotDefinition(_ dir: String) throws(APIError) -> VMConfig {
        let path = dir + "/state"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw APIError(.badRequest, "\(path): cannot be read", field: "restore")
        }
        guard data.count <= SnapshotFormat.maxStateBytes else { throw APIError(.badRequest, "\(path): too large", field: "restore") }
        do { return try VMSnapshot(parsing: Array(data), host: .ofThisHost).definition } catch {
            throw APIError(.badRequest, "\(path): \(error)", field: "restore")
        }
    }

    /// Kernel, initrd and disk images must exist (and be writable when the disk is): a mistake is
    /// reported now, naming the field, not as a crashed VM later.
    static func checkFiles(_ config: VMConfig) throws(APIError) {
        try checkFile(config.kernel, field: "kernel", writable: false, blockDeviceOK: false)
        if let initrd = config.initrd {
            try checkFile(initrd, field: "initrd", writable: false, blockDeviceOK: false)
            // Whether it fits next to the kernel is known when the VMM loads both; these
            // two are certain now.
            var st = stat()
            if stat(initrd, &st) == 0 && st.st_size == 0 { throw APIError(.badRequest, "\(initrd) is empty", field: "initrd") }
            if stat(initrd, &st) == 0 && UInt64(st.st_size) > UInt64(config.memoryMiB) << 20 {
                throw APIError(.badRequest, "\(initrd): \(st.st_size) bytes is larger than guest RAM (\(config.memoryMiB) MiB)", field: "initrd")
            }
        }
        for (i, d) in config.disks.enumerated() {
            try checkFile(d.path, field: "disks[\(i)].path", writable: !d.readOnly, blockDeviceOK: true)
        }
    }

    static func checkFile(_ path: String, field: String, writable: Bool, blockDeviceOK: Bool) throws(APIError) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw APIError(.badRequest, "\(path): \(String(cString: strerror(errno)))", field: field) }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || (blockDeviceOK && type == S_IFBLK) else {
            throw APIError(.badRequest, "\(path) is not a regular file" + (blockDeviceOK ? " or block device" : ""), field: field)
        }
        guard access(path, writable ? R_OK | W_OK : R_OK) == 0 else {
            throw APIError(.badRequest, "\(path): \(String(cString: strerror(errno)))" + (writable ? " (a writable disk must be writable)" : ""),
                           field: field)
        }
    }

    /// A writable disk belongs to one VM: another VM may not name it (in any mode), and a
    /// disk another VM writes may not be added read-only either.
    func checkDiskSharing(_ config: VMConfig) throws(APIError) {
        // The same file under two names (symlinks, `..`) is the same disk.
        func key(_ p: String) -> String {
            guard let r = realpath(p, nil) else { return p }
            defer { free(r) }
            return String(cString: r)
        }
        for (i, d) in config.disks.enumerated() {
            let k = key(d.path)
            for (other, vm) in vms {
                for od in vm.config.disks where key(od.path) == k && (!d.readOnly || !od.readOnly) {
                    throw .conflict("\(d.path) is a disk of VM '\(other)'" + (od.readOnly ? "" : " (writable)"),
                                    field: "disks[\(i)].path")
                }
            }
        }
    }

    public func delete(_ name: String) throws(APIError) {
        let vm = try get(name)
        guard !vm.record.state.isActive else {
            throw .conflict("cannot delete '\(name)': it is \(vm.record.state.rawValue) (stop or kill it first)", field: "state")
        }
        vms[name] = nil
        StateFiles.removeDirectory(VMPaths(stateDir: stateDir, name: name).dir)
        publish(name, state: "deleted", extra: [])
    }

    // MARK: Runs

    /// Starts a VMM for the VM; returns once the process exists (state `starting`).
    public func startVM(_ name: String, taps: TapOpener?) throws(APIError) {
        var vm = try get(name)
        guard [.created, .stopped, .crashed].contains(vm.record.state) else {
            throw .conflict("cannot start '\(name)': it is \(vm.record.state.rawValue)", field: "state")
        }
        let paths = VMPaths(stateDir: stateDir, name: name)
        for stale in [paths.exit, paths.control, paths.consoleLog] { unlink(stale) }
        var config = vm.config
        var opened: [Tap] = []
        if !config.nets.isEmpty, let taps { (config, opened) = try taps.handOver(config) }
        // A VM created from a snapshot resumes it on its first start; later starts boot.
        let restore = FileManager.default.contents(atPath: paths.restore).map { String(decoding: $0, as: UTF8.self) }
        let pid: Int32
        do {
            pid = try spawnVMM(executable: vmmExecutable, configJSON: config.jsonBytes, paths: paths,
                               extraFDs: opened.map(\.fd),
                               extraArguments: vmmArguments + (restore.map { ["--restore", $0] } ?? []) + (testVMMArguments[name] ?? []))
        } catch {
            throw APIError(.internalServerError, "cannot start the VMM: \(error)")
        }
        if restore != nil { unlink(paths.restore) }
        withExtendedLifetime(opened) {}  // the VMM has its own copies now; ours close here
        vm.token = newToken()
        vm.vmmSeq = 0
        vm.record.state = .starting
        vm.record.pid = pid
        vm.record.pidStart = processStartTime(pid)
        vm.record.startedNs = wallClockNanoseconds()
        vm.record.uptimeBaseNs = 0
        vm.record.runningSinceMono = nil
        vms[name] = vm
        try? StateFiles.write(Array("\(pid) \(vm.record.pidStart ?? 0)\n".utf8), to: paths.pidFile)
        persist(name)
        publish(name, extra: [("pid", .int(pid))])
        watcher.watch(pid: pid, child: true, token: vm.token)
        follow(name: name, token: vm.token, control: paths.control, adopting: false)
    }

    /// Follows a run's state changes: waits for the control socket, subscribes to its
    /// events and applies each. Ends when the VMM closes the stream (it is exiting).
    nonisolated func follow(name: String, token: UInt64, control: String, adopting: Bool) {
        Task {
            // The VMM creates its socket within milliseconds; give a loaded host 30 s.
            let deadline = monotonicNanoseconds() + 30_000_000_000
            while monotonicNanoseconds() < deadline {
                guard await self.isCurrent(name, token) else { return }
                do {
                    try await ControlConnection.with(path: control, request: .events) { _, pending, it, _ in
                        // The stream reports changes from now on: read where it is first.
                        if let s = try? await ControlConnection.request(path: control, .status) {
                            await self.observe(name, token: token, status: s)
                        }
                        var it = it
                        var buffer = pending
                        while true {
                            while let nl = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                                let line = buffer.readBytes(length: nl - buffer.readerIndex)!
                                buffer.moveReaderIndex(forwardBy: 1)
                                if let ev = try? JSONValue(parsing: line) { await self.observe(name, token: token, status: ev) }
                            }
                            guard var chunk = try await it.next() else { return }
                            buffer.writeBuffer(&chunk)
                            buffer.discardReadBytes()
                        }
                    }
                    return
                } catch ControlCallError.unreachable {
                    try? await Task.sleep(for: .milliseconds(1))
                } catch {
                    return
                }
            }
        }
    }

    func isCurrent(_ name: String, _ token: UInt64) -> Bool {
        guard let vm = vms[name] else { return false }
        return vm.token == token && vm.record.state.isActive
    }

    /// Applies a state the VMM reported (a status answer or an event line). Final states
    /// are recorded when the process has ended (processEnded), with its exit record.
    public func observe(_ name: String, token: UInt64, status: JSONValue, fromEvents: Bool = true) {
        if fromEvents, vms[name]?.token == token { vms[name]!.eventSeq += 1 }
        guard var vm = vms[name], vm.token == token, vm.record.state.isActive,
              let s = status["state"]?.stringValue, let new = VMState(rawValue: s), new.isActive else { return }
        // The seq is kept even when the state is the one recorded: a reboot answers
        // `running` (seq N+2) while its `starting` event (N+1) may still be on its way.
        if let seq = (status["seq"] ?? status["state_seq"]).flatMap(uint64) {
            if seq <= vm.vmmSeq { return }
            vm.vmmSeq = seq
            vms[name] = vm
        }
        guard new != vm.record.state || status["uptime_ns"] != nil else { return }
        let now = monotonicNanoseconds()
        if let up = status["uptime_ns"].flatMap(uint64) {
            // The VMM's own count (re-adoption): trust it over ours.
            vm.record.uptimeBaseNs = up
            vm.record.runningSinceMono = new == .running ? now : nil
        } else if new == .running, vm.record.runningSinceMono == nil {
            vm.record.runningSinceMono = now
        } else if new != .running, let since = vm.record.runningSinceMono {
            vm.record.uptimeBaseNs += now > since ? now - since : 0
            vm.record.runningSinceMono = nil
        }
        let changed = new != vm.record.state
        vm.record.state = new
        vms[name] = vm
        if changed {
            persist(name)
            publish(name, extra: [])
        }
    }

    /// A VMM process ended: record how, from exit.json and its wait status.
    func processEnded(pid: Int32, token: UInt64, end: ProcessEnd) {
        guard let name = vms.first(where: { $0.value.token == token })?.key, var vm = vms[name] else { return }
        let paths = VMPaths(stateDir: stateDir, name: name)
        let (state, exit) = endRecord(exitJSON: StateFiles.readJSON(paths.exit), end: end, logTail: lastLogLine(paths.log))
        vm.record.end(state: state, exit: exit)
        vms[name] = vm
        unlink(paths.pidFile)
        unlink(paths.control)
        // A jailed VMM's supervisor removes the VM's cgroup, unless it was killed too.
        if vmmArguments.contains("--jail") {
            let cgroup = JailCgroup.name(supervisor: pid)
            Thread.detachNewThread { JailCgroup.removeLeftover(name: cgroup) }  // it may wait: not on the pool
        }
        persist(name)
        logger.info("VM ended", metadata: ["vm": "\(name)", "pid": "\(pid)", "exit": "\(exit.encoded)"])
        publish(name, extra: [("last_exit", exit)])
    }

    /// Ends a VM whose VMM does not answer: SIGKILL its process group.
    public func forceKill(_ name: String) throws(APIError) {
        let vm = try get(name)
        guard vm.record.state.isActive, let pid = vm.record.pid else {
            throw .conflict("cannot kill '\(name)': it is \(vm.record.state.rawValue)", field: "state")
        }
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
    }

    // MARK: Persistence and events

    private func persist(_ name: String) {
        guard let vm = vms[name] else { return }
        do { try StateFiles.write(vm.record.json.encodedBytes, to: VMPaths(stateDir: stateDir, name: name).record) } catch {
            logger.error("cannot write a VM record", metadata: ["vm": "\(name)", "error": "\(error)"])
        }
    }

    private func publish(_ name: String, state: String? = nil, extra: [(key: String, value: JSONValue)]) {
        let s = state ?? vms[name]?.record.state.rawValue ?? "deleted"
        let ev = VMEvent(name: name, state: s, json: .object([("vm", .string(name)), ("state", .string(s)),
                                                              ("ts_ns", .int(wallClockNanoseconds()))] + extra))
        for c in subscribers.values { c.yield(ev) }
    }

    /// A stream of every state change from now on; ends when the caller stops iterating
    /// or the daemon shuts down. Every 15 s it carries a heartbeat (an event with an
    /// empty name) so a stream whose client went away is noticed at the next write.
    public func subscribe() -> AsyncStream<VMEvent> {
        let id = newToken()
        let (stream, continuation) = AsyncStream<VMEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        if shuttingDown {
            continuation.finish()
            return stream
        }
        subscribers[id] = continuation
        continuation.onTermination = { [weak self] _ in Task { await self?.unsubscribe(id) } }
        return stream
    }

    private func unsubscribe(_ id: UInt64) { subscribers[id] = nil }

    func heartbeat() {
        let beat = VMEvent(name: "", state: "", json: .null)
        for c in subscribers.values { c.yield(beat) }
    }

    /// SIGTERM: end every stream to clients (events, consoles, followed logs) so the
    /// server's graceful shutdown completes at once. VMs are left running.
    public func shutdown() {
        shuttingDown = true
        for c in subscribers.values { c.finish() }
        subscribers = [:]
        streams.closeAll()
    }

    /// Waits until the VM's state is one of `states` (true) or `timeout` passes (false).
    public func wait(_ name: String, for states: Set<VMState>, timeout: Duration) async -> Bool {
        let events = subscribe()
        if let s = vms[name]?.record.state, states.contains(s) { return true }
        if vms[name] == nil { return false }
        return await withTaskGroup(of: Bool.self) { g in
            g.addTask {
                for await e in events where e.name == name {
                    // (Heartbeats have no name and never match.)
                    if let s = VMState(rawValue: e.state), states.contains(s) { return true }
                    if e.state == "deleted" { return false }
                }
                return false
            }
            g.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let r = await g.next() ?? false
            g.cancelAll()
            return r
        }
    }
}
