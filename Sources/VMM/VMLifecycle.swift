#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import HostNet
import KVM
import VMControl

/// What one vCPU thread is told to do (its mailbox). Save and restore will join these.
enum VCPUCommand: Sendable, Equatable {
    /// Enter the guest.
    case run
    /// Stay out of KVM_RUN, parked in the mailbox, until told otherwise.
    case pause
    /// End the thread.
    case stop
}

/// A state change, as the control socket's `events` stream reports it.
public struct VMStateEvent: Sendable, Equatable {
    public let state: VMState
    /// Wall clock (CLOCK_REALTIME), nanoseconds.
    public let timestampNs: UInt64
    /// Set on the final event: how the VM ended.
    public let exit: VMExit?
    /// 1, 2, 3...: the order of state changes. A client that reads `status` and follows
    /// `events` uses it to drop an event older than the status it already applied.
    public var seq: UInt64 = 0
}

/// The lifecycle's shared state, behind `VM.lifecycle`.
struct LifecycleState {
    var machine = LifecycleMachine()
    /// Counts state changes (VMStateEvent.seq; `status` reports the current one).
    var stateSeq: UInt64 = 0
    /// Mailboxes: `commands[i]` for vCPU i, and whether it is parked reading it.
    var commands: [VCPUCommand]
    var parked: [Bool]
    var ended: [Bool]
    /// Times vCPU i left its mailbox to run.
    var departures: [UInt64]
    /// How the guest ended (a vCPU saw power-off, reset, a crash); the supervisor acts.
    var guestEnd: VMExit?
    /// How the host ended it (stop, kill, stop timeout); wins over `guestEnd`.
    var hostEnd: VMExit?
    /// CLOCK_MONOTONIC deadline of a `stop` waiting for the guest to power off.
    var stopDeadline: UInt64?
    var stopTimeoutSeconds = 0
    /// Wall clock and monotonic time of the current boot (status `started_ns`, uptime).
    var startedNs: UInt64 = 0
    var startedMonotonicNs: UInt64 = 0
    var final: VMExit?

    init(vcpus: Int) {
        commands = Array(repeating: .pause, count: vcpus)
        parked = Array(repeating: false, count: vcpus)
        ended = Array(repeating: false, count: vcpus)
        departures = Array(repeating: 0, count: vcpus)
    }

    var allParked: Bool {
        for i in parked.indices where !parked[i] && !ended[i] { return false }
        return true
    }
}

/// A snapshot of the lifecycle for `status`.
public struct VMStatus: Sendable {
    public let state: VMState
    public let startedNs: UInt64
    public let uptimeNs: UInt64
    public let exit: VMExit?
    /// The seq of the state change that entered `state`.
    public var stateSeq: UInt64 = 0
}

extension VM {
    // MARK: Queries

    public var state: VMState { lifecycle.withLock(&life) { $0.machine.state } }
    public var isPaused: Bool { state == .paused }

    public var status: VMStatus {
        lifecycle.withLock(&life) { s in
            let up = s.startedMonotonicNs == 0 || s.machine.state.isFinal ? 0 : monotonicNanoseconds() - s.startedMonotonicNs
            return VMStatus(state: s.machine.state, startedNs: s.startedNs, uptimeNs: up, exit: s.final, stateSeq: s.stateSeq)
        }
    }

    /// Moves the machine to `next` and tells the observer (lifecycle lock held).
    func enter(_ next: VMState, _ s: inout LifecycleState, exit: VMExit? = nil) {
        guard s.machine.enter(next) else { return }
        s.stateSeq += 1
        observer?(VMStateEvent(state: next, timestampNs: wallClockNanoseconds(), exit: exit, seq: s.stateSeq))
    }

    // MARK: Operations

    /// Throws `.conflict` when the current state does not allow `op`.
    func check(_ op: LifecycleOperation) throws(VMMError) {
        let conflict = lifecycle.withLock(&life) { s -> LifecycleConflict? in
            do throws(LifecycleConflict) {
                try s.machine.check(op)
                return nil
            } catch {
                return error
            }
        }
        if let conflict { throw .conflict(conflict) }
    }

    /// Serialises lifecycle operations (pause, resume, reboot, teardown).
    func withOperation<R>(_ body: () throws(VMMError) -> R) throws(VMMError) -> R {
        operation.wait(&operationBusy, until: { !$0 }) { busy, _ in busy = true }
        defer { operation.update(&operationBusy) { $0 = false } }
        return try body()
    }

    /// Starts the device threads and one thread per vCPU on the booted machine.
    public func start() throws(VMMError) {
        try withOperation { () throws(VMMError) in
            if (try? check(.start)) == nil { return }  // started already
            lifecycle.update(&life) { enter(.starting, &$0) }
            do throws(VMMError) {
                // Device threads first: a guest may notify a queue as soon as it runs.
                for loop in deviceLoops { try loop.start() }
                VCPUKicker.installSignalHandler()
                for ctx in vcpus {
                    ctx.thread = try spawnThread(name: "vcpu\(ctx.index)", role: .vcpu) { [ctx] in ctx.threadMain() }
                }
            } catch {
                lifecycle.update(&life) { s in
                    s.hostEnd = .failed("\(error)")
                    for i in s.commands.indices { s.commands[i] = .stop }
                }
                throw error
            }
            lifecycle.update(&life) { s in
                s.startedNs = wallClockNanoseconds()
                s.startedMonotonicNs = monotonicNanoseconds()
                for i in s.commands.indices { s.commands[i] = .run }
                enter(.running, &s)
            }
        }
    }

    /// Parks every vCPU outside KVM_RUN and quiesces the device threads; returns once
    /// all are parked (the state is then `paused`).
    public func pause() throws(VMMError) {
        try withOperation { () throws(VMMError) in
            try check(.pause)
            parkVCPUs()
            for loop in deviceLoops { loop.quiesce() }
            // The guest's clock keeps following the host's (no jump back, no lost time on
            // resume); KVMCLOCK_CTRL marks the pause so its watchdogs don't fire.
            for ctx in vcpus { ctx.vcpu.notifyClockPaused() }
            lifecycle.update(&life) { enter(.paused, &$0) }
        }
    }

    /// Lets the devices and vCPUs run again; returns once every vCPU has left its mailbox.
    public func resume() throws(VMMError) {
        try withOperation { () throws(VMMError) in
            try check(.resume)
            for loop in deviceLoops { loop.resume() }
            unparkVCPUs()
            lifecycle.update(&life) { enter(.running, &$0) }
        }
    }

    /// Reboots in this process: vCPUs parked, devices quiesced, the machine reset and
    /// booted again, then everything runs. Returns when the VM is running again.
    public func reboot() throws(VMMError) {
        try withOperation { () throws(VMMError) in
            try check(.reboot)
            try rebootLocked()
        }
    }

    /// The reboot itself (operation held, state running or paused).
    func rebootLocked() throws(VMMError) {
        let wasPaused = lifecycle.update(&life) { s -> Bool in
            let p = s.machine.state == .paused
            enter(.starting, &s)
            return p
        }
        if !wasPaused {
            parkVCPUs()
            for loop in deviceLoops { loop.quiesce() }
        }
        // A guest power-off or crash that raced with the reboot wins: the VM ends.
        if lifecycle.withLock(&life, { s in s.hostEnd != nil || (s.guestEnd != nil && s.guestEnd != .reset) }) {
            for loop in deviceLoops { loop.resume() }
            return
        }
        do {
            try resetMachine()
            try boot()
        } catch {
            lifecycle.update(&life) { $0.hostEnd = .failed("reboot: \(error)") }
            for loop in deviceLoops { loop.resume() }
            throw error
        }
        lifecycle.update(&life) { s in
            s.guestEnd = nil
            s.startedNs = wallClockNanoseconds()
            s.startedMonotonicNs = monotonicNanoseconds()
        }
        for loop in deviceLoops { loop.resume() }
        unparkVCPUs()
        lifecycle.update(&life) { enter(.running, &$0) }
    }

    /// Asks the guest to power off (the paravirtual power button); after `timeoutSeconds`
    /// without a power-off the supervisor ends the VM itself. Returns at once.
    public func requestStop(timeoutSeconds: Int) throws(VMMError) {
        try withOperation { () throws(VMMError) in
            try check(.stop)
            let st = state
            if st == .stopping { return }
            // A paused guest cannot see the button: let it run first.
            if st == .paused {
                for loop in deviceLoops { loop.resume() }
                unparkVCPUs()
            }
            lifecycle.update(&life) { s in
                enter(.stopping, &s)
                s.stopTimeoutSeconds = timeoutSeconds
                s.stopDeadline = monotonicNanoseconds() + UInt64(max(0, timeoutSeconds)) * 1_000_000_000
            }
            sysctl.pressPowerButton()
        }
    }

    /// Ends the VM now (no guest involvement); `wait()` returns `.killed`.
    public func kill() throws(VMMError) {
        try endFromHost(.killed, operation: .kill)
    }

    /// Asks the VM to stop (Ctrl-A x, a signal); `wait()` then returns `.stopped` unless
    /// the guest ended first.
    public func stop() { try? endFromHost(.stopped, operation: .kill) }

    func endFromHost(_ exit: VMExit, operation: LifecycleOperation) throws(VMMError) {
        try check(operation)
        lifecycle.update(&life) { s in
            if s.hostEnd == nil { s.hostEnd = exit }
            if s.machine.state != .stopping { enter(.stopping, &s) }
        }
        kickAll()
    }

    /// Blocks until the VM has ended for good (handling guest resets by rebooting when
    /// `resetPolicy` says so and stop timeouts), joins every thread, returns how it ended.
    public func wait() -> VMExit {
        while true {
            let deadline = lifecycle.withLock(&life) { $0.stopDeadline }
            let end: VMExit? = lifecycle.wait(&life, until: { s in
                s.hostEnd != nil || s.guestEnd != nil || s.stopDeadline != deadline || s.machine.state == .created
            }, deadlineNs: deadline) { s, _ in
                if s.hostEnd == nil, s.guestEnd == nil, let d = s.stopDeadline, monotonicNanoseconds() >= d {
                    s.hostEnd = .stopTimedOut(seconds: s.stopTimeoutSeconds)
                }
                if s.machine.state == .created && s.hostEnd == nil { s.hostEnd = .stopped }
                return s.hostEnd ?? s.guestEnd
            }
            guard let end else { continue }  // woken early by a new deadline
            if end == .reset && resetPolicy == .restart && lifecycle.withLock(&life, { $0.hostEnd == nil }) {
                do { try withOperation { () throws(VMMError) in try rebootLocked() } } catch {
                    lifecycle.update(&life) { $0.hostEnd = .failed("reboot: \(error)") }
                }
                continue
            }
            return teardown(end)
        }
    }

    /// Stops every thread and records the final state.
    func teardown(_ end: VMExit) -> VMExit {
        lifecycle.update(&life) { s in
            if s.machine.state != .stopping && !s.machine.state.isFinal { enter(.stopping, &s) }
            for i in s.commands.indices { s.commands[i] = .stop }
        }
        kickAll()
        for ctx in vcpus {
            ctx.thread?.join()
            ctx.thread = nil
        }
        for loop in deviceLoops { loop.resume(); loop.stop() }
        // passt would also get SIGTERM when this process ends (PR_SET_PDEATHSIG); end it
        // now so it is gone when wait() returns.
        for case let p as PasstChannel in netChannels { p.terminate() }
        return lifecycle.update(&life) { s in
            if s.final == nil {
                s.final = end
                enter(end.finalState, &s, exit: end)
            }
            return s.final!
        }
    }

    // MARK: vCPU mailboxes

    /// Sets every running vCPU's mailbox to pause, kicks them, and waits until all park.
    func parkVCPUs() {
        lifecycle.update(&life) { s in
            for i in s.commands.indices where s.commands[i] == .run { s.commands[i] = .pause }
        }
        kickAll()
        lifecycle.wait(&life, until: { $0.allParked }) { _, _ in }
    }

    /// Sets every paused mailbox to run and waits until each of those vCPUs has left its
    /// mailbox (counted, so a vCPU that runs and parks again at once is not missed).
    func unparkVCPUs() {
        let (woken, before) = lifecycle.update(&life) { s -> ([Int], [UInt64]) in
            var woken: [Int] = []
            for i in s.commands.indices where s.commands[i] == .pause {
                s.commands[i] = .run
                woken.append(i)
            }
            return (woken, s.departures)
        }
        lifecycle.wait(&life, until: { s in
            for i in woken where s.departures[i] <= before[i] && !s.ended[i] && s.commands[i] == .run { return false }
            return true
        }) { _, _ in }
    }

    /// vCPU thread: parks while its mailbox says pause; returns false when told to stop.
    func awaitRun(_ i: Int) -> Bool {
        lifecycle.update(&life) { $0.parked[i] = true }
        return lifecycle.wait(&life, until: { $0.commands[i] != .pause }) { s, _ in
            s.parked[i] = false
            s.departures[i] += 1
            if s.commands[i] == .stop { s.ended[i] = true }
            return s.commands[i] == .run
        }
    }

    /// vCPU thread, after a kick: whether to keep running.
    func shouldRun(_ i: Int) -> Bool { lifecycle.withLock(&life) { $0.commands[i] == .run } }

    /// vCPU thread: the guest ended (power-off, reset, crash). The first report wins;
    /// every vCPU is parked and the supervisor (`wait`) decides: end or reboot.
    func guestEnded(_ exit: VMExit, vcpu i: Int) {
        let first = lifecycle.update(&life) { s -> Bool in
            if s.commands[i] == .run { s.commands[i] = .pause }
            guard s.guestEnd == nil else { return false }
            s.guestEnd = exit
            for j in s.commands.indices where s.commands[j] == .run { s.commands[j] = .pause }
            return true
        }
        if first { kickAll() }
    }

    func kickAll() {
        for ctx in vcpus {
            if let t = ctx.thread { ctx.kicker.kick(thread: t.handle) }
        }
        wake.signal()
    }
}

extension VMExit {
    /// The state a VM that ended this way is in.
    public var finalState: VMState {
        switch self {
        case .crashed, .failed: .crashed
        default: .stopped
        }
    }
}
