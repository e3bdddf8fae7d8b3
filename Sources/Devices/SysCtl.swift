import PVMMABI

/// pvmm's paravirtual system-control port (`SysCtl.port`, see docs/boot.md).
/// 32-bit `out`: power off with that status. 32-bit `in`: the "PVMM" signature.
public final class SystemControl: PortDevice {
    public init() {}

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        data.storeLittleEndian(offset == 0 && data.count == 4 ? UInt64(SysCtl.signature) : ~0)
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        // Only the full 32-bit write at the base counts, so stray byte writes can't stop the VM.
        guard offset == 0, data.count == 4 else { return .none }
        return .powerOff(status: Int32(truncatingIfNeeded: UInt32(truncatingIfNeeded: data.littleEndianValue)))
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
