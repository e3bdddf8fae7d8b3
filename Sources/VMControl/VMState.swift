/// Where a VM is in its life (docs/control.md). The control socket reports these names.
public enum VMState: String, Sendable, CaseIterable {
    /// Built (KVM, RAM, devices, vCPUs), not booted yet.
    case created
    /// Booting: kernel loading, vCPUs about to run (also during an in-process reboot).
    case starting
    case running
    /// Every vCPU is out of KVM_RUN, parked in its mailbox; device threads run on.
    case paused
    /// A stop was asked for (the guest has been sent the power button) or the VM is ending.
    case stopping
    /// Ended without a fault: power-off, reset without restart, stop, kill.
    case stopped
    /// Ended by a fault: triple fault, guest panic report, KVM or VMM error.
    case crashed

    public var isFinal: Bool { self == .stopped || self == .crashed }
}

/// What a client (the control socket, Ctrl-A x, a signal) asks of the lifecycle.
public enum LifecycleOperation: String, Sendable, CaseIterable {
    case start, pause, resume, stop, kill, reboot, snapshot
}

/// A lifecycle operation the current state does not allow (409 in the daemon's API).
public struct LifecycleConflict: Error, Sendable, Equatable, CustomStringConvertible {
    public let operation: LifecycleOperation
    public let state: VMState
    public init(operation: LifecycleOperation, state: VMState) {
        self.operation = operation
        self.state = state
    }

    public var description: String { "cannot \(operation.rawValue) a VM that is \(state.rawValue)" }
}

/// The lifecycle as a pure state machine: which operations each state allows and which
/// edges exist. The VM drives it under its lifecycle lock; unit tests drive it alone.
public struct LifecycleMachine: Sendable, Equatable {
    public private(set) var state: VMState = .created

    public init() {}

    /// The edges of the machine. Anything can end (stopping, stopped, crashed) unless it
    /// already has; `starting` is entered from created (boot) or running/paused (reboot).
    public static func allows(from a: VMState, to b: VMState) -> Bool {
        switch (a, b) {
        case (.created, .starting), (.starting, .running),
             (.running, .paused), (.paused, .running),
             (.running, .starting), (.paused, .starting):
            return true
        case (_, .stopping): return !a.isFinal && a != .stopping
        case (_, .stopped), (_, .crashed): return !a.isFinal
        default: return false
        }
    }

    /// Throws when `op` is not allowed now. `stop` while already stopping is allowed (it
    /// changes nothing); `kill` is allowed in every state but the final ones.
    public func check(_ op: LifecycleOperation) throws(LifecycleConflict) {
        let ok: Bool = switch op {
        case .start: state == .created
        case .pause: state == .running
        case .resume: state == .paused
        case .stop: state == .running || state == .paused || state == .stopping || state == .starting
        case .kill: !state.isFinal
        case .reboot, .snapshot: state == .running || state == .paused
        }
        if !ok { throw LifecycleConflict(operation: op, state: state) }
    }

    /// Moves to `next`; returns false (and stays) when the edge does not exist.
    @discardableResult
    public mutating func enter(_ next: VMState) -> Bool {
        guard Self.allows(from: state, to: next) else { return false }
        state = next
        return true
    }
}
