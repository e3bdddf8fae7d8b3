import Synchronization

/// One relaxed atomic counter, for statistics only (no ordering with anything else): VM
/// exits by kind (VMStats), device requests, notifications and interrupts (DeviceStats).
/// Adding costs one relaxed atomic add, next to paths that cost a syscall or an exit.
public final class StatCounter: Sendable {
    let raw = Atomic<UInt64>(0)
    public init() {}
    @inline(__always) public func add(_ n: UInt64 = 1) { raw.wrappingAdd(n, ordering: .relaxed) }
    public var value: UInt64 { raw.load(ordering: .relaxed) }
}
