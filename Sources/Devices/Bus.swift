/// What a device asks of the VM after handling an access.
public enum DeviceAction: Equatable, Sendable {
    case none
    /// Stop the VM; `pvmm run` exits with `status`.
    case powerOff(status: Int32)
    /// The guest asked for a reset (i8042 0xFE): a reboot or a clean stop (`--on-reset`).
    case reset
    /// The guest reported a panic (SysCtl.panicOffset): the VM ends as crashed.
    case panicked(GuestPanic)
}

/// A device on the I/O port bus. `offset` is relative to the device's base port; `data`
/// holds one access of 1, 2 or 4 bytes (little-endian).
public protocol PortDevice: AnyObject, Sendable {
    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction
}

extension UnsafeRawBufferPointer {
    /// The access as a little-endian integer (1, 2, 4 or 8 bytes).
    @inline(__always)
    public var littleEndianValue: UInt64 {
        var v: UInt64 = 0
        for i in 0..<Swift.min(count, 8) { v |= UInt64(self[i]) << (8 * UInt64(i)) }
        return v
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores the low `count` bytes of `value`, little-endian.
    @inline(__always)
    public func storeLittleEndian(_ value: UInt64) {
        for i in 0..<Swift.min(count, 8) { self[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}

/// A device in guest-physical MMIO space. `offset` is relative to the device's base;
/// `data` is the access (1, 2, 4 or 8 bytes).
public protocol MMIODevice: AnyObject, Sendable {
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction
}

/// Why a bus could not be built.
public enum BusError: Error, Equatable { case overlap(base: UInt64) }

/// [base, base+length) windows of one address space, sorted and non-overlapping. Lookup
/// is a linear scan: a VM has a handful of devices and every lookup follows a ~20 us exit.
public struct AddressMap<Address: FixedWidthInteger & UnsignedInteger & Sendable, Device: Sendable>: Sendable {
    public struct Mapping: Sendable {
        public let base: Address
        public let length: Address
        public let device: Device

        public init(base: Address, length: Address, device: Device) {
            self.base = base
            self.length = length
            self.device = device
        }
    }

    public let mappings: [Mapping]

    public init(_ mappings: [Mapping]) throws(BusError) {
        let sorted = mappings.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.base.addingReportingOverflow(a.length).partialValue > b.base {
            throw .overlap(base: UInt64(b.base))
        }
        self.mappings = sorted
    }

    /// The window holding all of [address, address+size) and the offset into it; an
    /// access straddling a window's end belongs to none.
    @inline(__always)
    func find(_ address: Address, size: Int) -> (device: Device, offset: Address)? {
        for m in mappings where address >= m.base && address - m.base < m.length {
            let offset = address - m.base
            return UInt64(offset) + UInt64(size) <= UInt64(m.length) ? (m.device, offset) : nil
        }
        return nil
    }
}

/// The port-I/O bus.
public final class PortBus: Sendable {
    public typealias Mapping = AddressMap<UInt16, any PortDevice>.Mapping
    public typealias Error = BusError
    let map: AddressMap<UInt16, any PortDevice>

    public init(_ mappings: [Mapping]) throws(BusError) { map = try AddressMap(mappings) }

    /// An `in`: unclaimed ports read as all ones, as on a PC.
    public func read(port: UInt16, into data: UnsafeMutableRawBufferPointer) {
        guard let (device, offset) = map.find(port, size: data.count) else {
            for i in data.indices { data[i] = 0xFF }
            return
        }
        device.read(offset: offset, into: data)
    }

    /// An `out`: unclaimed ports ignore the write.
    public func write(port: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard let (device, offset) = map.find(port, size: data.count) else { return .none }
        return device.write(offset: offset, from: data)
    }
}

extension PortBus {
    /// One port-I/O exit: `count` accesses of `size` bytes at `port` (count > 1 for `rep
    /// outs`), taken from `data` in order. Stops at the first access that asks the VM to
    /// stop (the rest of the string is not run, as on hardware that powered off). An exit
    /// whose size is not 1, 2 or 4, or whose data is shorter than size * count, runs nothing.
    public func write(port: UInt16, size: Int, count: Int, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard Self.validString(size: size, count: count, bytes: data.count) else { return .none }
        for i in 0..<count {
            let action = write(port: port, from: UnsafeRawBufferPointer(rebasing: data[(i * size)..<((i + 1) * size)]))
            if action != .none { return action }
        }
        return .none
    }

    /// One port-I/O exit for an `in`/`rep ins`: `count` reads of `size` bytes into `data`.
    public func read(port: UInt16, size: Int, count: Int, into data: UnsafeMutableRawBufferPointer) {
        guard Self.validString(size: size, count: count, bytes: data.count) else { return }
        for i in 0..<count {
            read(port: port, into: UnsafeMutableRawBufferPointer(rebasing: data[(i * size)..<((i + 1) * size)]))
        }
    }

    /// x86 port accesses are 1, 2 or 4 bytes; the string must fit the buffer.
    static func validString(size: Int, count: Int, bytes: Int) -> Bool {
        guard size == 1 || size == 2 || size == 4, count >= 0 else { return false }
        let (total, overflow) = size.multipliedReportingOverflow(by: count)
        return !overflow && total <= bytes
    }
}

/// The MMIO bus.
public final class MMIOBus: Sendable {
    public typealias Mapping = AddressMap<UInt64, any MMIODevice>.Mapping
    public typealias Error = BusError
    let map: AddressMap<UInt64, any MMIODevice>

    public init(_ mappings: [Mapping]) throws(BusError) { map = try AddressMap(mappings) }

    /// Unclaimed reads float high.
    public func read(address: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard let (device, offset) = map.find(address, size: data.count) else {
            for i in data.indices { data[i] = 0xFF }
            return
        }
        device.read(offset: offset, into: data)
    }

    public func write(address: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard let (device, offset) = map.find(address, size: data.count) else { return .none }
        return device.write(offset: offset, from: data)
    }
}

