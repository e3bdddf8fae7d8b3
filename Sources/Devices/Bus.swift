/// What a device asks of the VM after handling an access.
public enum DeviceAction: Equatable, Sendable {
    case none
    /// Stop the VM; `pvmm run` exits with `status`.
    case powerOff(status: Int32)
    /// The guest asked for a reset (i8042 0xFE); pvmm treats it as a clean stop.
    case reset
}

/// A device on the I/O port bus. `offset` is relative to the device's base port; `data`
/// holds one access of 1, 2 or 4 bytes (little-endian).
public protocol PortDevice: AnyObject, Sendable {
    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction
}

/// The port-I/O bus: a short sorted list of [base, base+length) ranges. Lookup is a linear
/// scan: there are a handful of devices and this runs after a ~20 us exit anyway.
public final class PortBus: Sendable {
    public struct Mapping: Sendable {
        public let base: UInt16
        public let length: UInt16
        public let device: any PortDevice

        public init(base: UInt16, length: UInt16, device: any PortDevice) {
            self.base = base
            self.length = length
            self.device = device
        }
    }

    public let mappings: [Mapping]

    public enum Error: Swift.Error, Equatable { case overlap(base: UInt16, length: UInt16) }

    public init(_ mappings: [Mapping]) throws(Error) {
        let sorted = mappings.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where Int(a.base) + Int(a.length) > Int(b.base) {
            throw .overlap(base: b.base, length: b.length)
        }
        self.mappings = sorted
    }

    @inline(__always)
    func find(_ port: UInt16) -> Mapping? {
        for m in mappings where port >= m.base && Int(port) < Int(m.base) + Int(m.length) { return m }
        return nil
    }

    /// An `in`: unclaimed ports read as all ones, as on a PC.
    public func read(port: UInt16, into data: UnsafeMutableRawBufferPointer) {
        guard let m = find(port) else {
            for i in data.indices { data[i] = 0xFF }
            return
        }
        m.device.read(offset: port - m.base, into: data)
    }

    /// An `out`: unclaimed ports ignore the write.
    public func write(port: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard let m = find(port) else { return .none }
        return m.device.write(offset: port - m.base, from: data)
    }
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

/// The MMIO bus: [base, base+length) windows, sorted, non-overlapping.
public final class MMIOBus: Sendable {
    public struct Mapping: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: any MMIODevice
        public init(base: UInt64, length: UInt64, device: any MMIODevice) {
            self.base = base
            self.length = length
            self.device = device
        }
    }

    public let mappings: [Mapping]

    public enum Error: Swift.Error, Equatable { case overlap(base: UInt64) }

    public init(_ mappings: [Mapping]) throws(Error) {
        let sorted = mappings.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.base.addingReportingOverflow(a.length).partialValue > b.base {
            throw .overlap(base: b.base)
        }
        self.mappings = sorted
    }

    @inline(__always)
    func find(_ address: UInt64) -> Mapping? {
        for m in mappings where address >= m.base && address - m.base < m.length { return m }
        return nil
    }

    /// Unclaimed reads float high; an access that straddles a window's end is refused.
    public func read(address: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard let m = find(address), address - m.base + UInt64(data.count) <= m.length else {
            for i in data.indices { data[i] = 0xFF }
            return
        }
        m.device.read(offset: address - m.base, into: data)
    }

    public func write(address: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard let m = find(address), address - m.base + UInt64(data.count) <= m.length else { return .none }
        return m.device.write(offset: address - m.base, from: data)
    }
}
