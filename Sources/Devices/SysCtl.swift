import GuestMemory
import PVMMABI
import Synchronization

/// What a guest's panic report (`SysCtl.panicOffset`) said. `vector` and `rip` are nil
/// when the report could not be read (its address is not guest RAM).
public struct GuestPanic: Sendable, Equatable {
    public var vector: UInt64?
    public var errorCode: UInt64?
    public var rip: UInt64?
    public var cr2: UInt64?

    public init(vector: UInt64? = nil, errorCode: UInt64? = nil, rip: UInt64? = nil, cr2: UInt64? = nil) {
        self.vector = vector
        self.errorCode = errorCode
        self.rip = rip
        self.cr2 = cr2
    }

    /// Reads the report at `address` (guest input: every byte through GuestMemory).
    public init(reportAt address: UInt64, in memory: GuestMemory) {
        do throws(GuestMemoryError) {
            let b = try memory.readBytes(at: address, count: PanicReport.size)
            func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
            self.init(vector: u64(PanicReport.vector), errorCode: u64(PanicReport.errorCode),
                      rip: u64(PanicReport.rip), cr2: u64(PanicReport.cr2))
        } catch {
            self.init()
        }
    }
}

/// pvmm's paravirtual system-control port (`SysCtl.port`, see docs/boot.md).
/// +0: 32-bit `out` powers off with that status, 32-bit `in` reads the "PVMM" signature.
/// +4: host requests (the power button): `in` reads them, `out` acknowledges.
/// +8: 32-bit `out` of a panic report's address ends the VM as crashed.
public final class SystemControl: PortDevice {
    let memory: GuestMemory?
    let irq: (any InterruptLine)?
    let events = Atomic<UInt32>(0)

    public init(memory: GuestMemory? = nil, irq: (any InterruptLine)? = nil) {
        self.memory = memory
        self.irq = irq
    }

    /// Host side (the control socket's `stop`): latches the power button and raises an
    /// edge on `SysCtl.eventIRQ` so an idle guest wakes up to see it.
    public func pressPowerButton() {
        events.bitwiseOr(SysCtl.eventPowerButton, ordering: .acquiringAndReleasing)
        irq?.set(true)
        irq?.set(false)
    }

    /// Pending host requests (SysCtl.event* bits).
    public var pendingEvents: UInt32 { events.load(ordering: .acquiring) }

    /// A reboot forgets requests made to the previous boot.
    public func reset() { events.store(0, ordering: .releasing) }

    /// A restore: the events the guest had not acknowledged (their edge is in the saved
    /// irqchip state already).
    public func restoreEvents(_ v: UInt32) { events.store(v & SysCtl.eventPowerButton, ordering: .releasing) }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        guard data.count == 4 else { return data.storeLittleEndian(~0) }
        switch offset {
        case 0: data.storeLittleEndian(UInt64(SysCtl.signature))
        case SysCtl.eventsOffset: data.storeLittleEndian(UInt64(pendingEvents))
        default: data.storeLittleEndian(~0)
        }
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        // Only full 32-bit writes count, so stray byte writes can't stop the VM.
        guard data.count == 4 else { return .none }
        let v = UInt32(truncatingIfNeeded: data.littleEndianValue)
        switch offset {
        case 0: return .powerOff(status: Int32(bitPattern: v))
        case SysCtl.eventsOffset:
            events.bitwiseAnd(~v, ordering: .acquiringAndReleasing)
            return .none
        case SysCtl.panicOffset:
            guard let memory else { return .panicked(GuestPanic()) }
            return .panicked(GuestPanic(reportAt: UInt64(v), in: memory))
        default: return .none
        }
    }
}

/// Just enough of the i8042 keyboard controller for the PC reset idiom: writing 0xFE to
/// the command port pulses the CPU reset line. Status reads say "nothing to read".
public final class I8042: PortDevice {
    public init() {}

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        data.storeLittleEndian(0)
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        // Mapped at 0x60 with length 5: offset 4 is the command port 0x64.
        offset == 4 && data.first == LegacyPorts.i8042Reset ? .reset : .none
    }
}
