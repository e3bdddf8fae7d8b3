// libFuzzer entry for the port and MMIO bus dispatch (Devices/Bus.swift), the splitting
// of a port-I/O exit into `count` accesses of `size` bytes (PortBus.write/read(port:size:
// count:)), and the IRQ probe's guest-written mailbox (Devices/ProbeMailbox.swift).
// Windows come from the input (overlaps must be refused); every access reaches the one
// device whose window holds all of it, at the right offset and width, or reads as all
// ones; a string exit runs exactly count accesses in order unless a device stops the VM;
// the mailbox stores only inside guest RAM. Built and run by Scripts/fuzz-bus.
//
// Input: byte 0 the number of windows (0-7), then 4 bytes per window (base u16, length
// u8, device flags u8: bit 0 powers off on a write of 0xFF). Then 8-byte operations:
// kind (bits 0-1: 0 port write string, 1 port read string, 2 MMIO write, 3 MMIO read;
// bits 2-3 size 1/2/4/8 (8 and 3 are invalid for ports); bits 4-7 count 0-15), address
// u32, value/data u8, then two mailbox bytes (offset selector, value).
import Devices
import GuestMemory

final class Recorder: PortDevice, MMIODevice, @unchecked Sendable {
    let id: Int, length: UInt64, powersOff: Bool
    var accesses: [(UInt64, Int, Bool)] = []
    init(id: Int, length: UInt64, powersOff: Bool) { self.id = id; self.length = length; self.powersOff = powersOff }

    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) { read(offset: UInt64(offset), into: data) }
    func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction { write(offset: UInt64(offset), from: data) }
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        precondition(offset + UInt64(data.count) <= length, "access past the window")
        accesses.append((offset, data.count, false))
        for i in data.indices { data[i] = UInt8(truncatingIfNeeded: id) }
    }
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction {
        precondition(offset + UInt64(data.count) <= length, "access past the window")
        accesses.append((offset, data.count, true))
        return powersOff && data.first == 0xFF ? .powerOff(status: Int32(id)) : .none
    }
}

let memory = try! GuestMemory(size: 64 << 10, holeStart: 32 << 10, holeEnd: 48 << 10)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBus(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 1 else { return 0 }
    let n = Int(input[0] & 7)
    guard input.count >= 1 + 4 * n else { return 0 }
    var devices: [Recorder] = []
    var ports: [PortBus.Mapping] = [], windows: [MMIOBus.Mapping] = []
    for w in 0..<n {
        let p = 1 + 4 * w
        let base = UInt16(input[p]) | UInt16(input[p + 1]) << 8
        let length = UInt16(input[p + 2]) + 1
        let d = Recorder(id: w + 1, length: UInt64(length), powersOff: input[p + 3] & 1 != 0)
        devices.append(d)
        // Lengths past the 16-bit port space wrap in the overlap check: keep them inside.
        ports.append(PortBus.Mapping(base: base, length: min(length, UInt16.max - base), device: d))
        // One 64 KiB slot per window: MMIO windows never overlap, whatever the ports do.
        windows.append(MMIOBus.Mapping(base: UInt64(w) << 16 | UInt64(base & 0xFF00), length: UInt64(length), device: d))
    }
    let sortedPorts = ports.sorted { $0.base < $1.base }
    let overlap = zip(sortedPorts, sortedPorts.dropFirst()).contains { Int($0.base) + Int($0.length) > Int($1.base) }
    let portBus: PortBus
    do { portBus = try PortBus(ports) } catch {
        precondition(overlap, "non-overlapping ports refused")
        return 0
    }
    precondition(!overlap, "overlapping ports accepted")
    let mmioBus = try! MMIOBus(windows)
    var mailbox = ProbeMailbox()
    var buffer = [UInt8](repeating: 0, count: 64)

    var i = 1 + 4 * n
    while i + 8 <= input.count {
        let kind = input[i]
        let address = UInt32(input[i + 1]) | UInt32(input[i + 2]) << 8 | UInt32(input[i + 3]) << 16 | UInt32(input[i + 4]) << 24
        let value = input[i + 5]
        let half = UInt32(input[i + 7]) << 8 | UInt32(input[i + 6] >> 1)
        withUnsafeBytes(of: half) {
            mailbox.write(offset: input[i + 6] & 1 == 0 ? ProbeMailbox.lowOffset : ProbeMailbox.highOffset, from: $0)
        }
        i += 8
        let width = [1, 2, 4, 8][Int(kind >> 2) & 3], count = Int(kind >> 4)
        for d in devices { d.accesses = [] }
        for j in buffer.indices { buffer[j] = value }
        switch kind & 3 {
        case 0, 1:
            let port = UInt16(truncatingIfNeeded: address)
            let target = ports.first { port >= $0.base && Int(port) - Int($0.base) + width <= Int($0.length) }
            if kind & 3 == 0 {
                let action = buffer.withUnsafeBytes { portBus.write(port: port, size: width, count: count, from: $0) }
                let valid = width <= 4 && count > 0
                if let t = target?.device as? Recorder, valid {
                    let expectStop = t.powersOff && value == 0xFF
                    precondition(t.accesses.count == (expectStop ? 1 : count), "string split into \(t.accesses.count)")
                    precondition(action == (expectStop ? .powerOff(status: Int32(t.id)) : .none))
                } else {
                    precondition(action == .none)
                    if let t = target?.device as? Recorder { precondition(t.accesses.isEmpty, "invalid string ran") }
                }
            } else {
                buffer.withUnsafeMutableBytes { portBus.read(port: port, size: width, count: count, into: $0) }
                let valid = width <= 4 && count > 0
                let expected: UInt8 = target.map { UInt8(($0.device as! Recorder).id) } ?? 0xFF
                for j in 0..<(valid ? width * count : 0) { precondition(buffer[j] == expected, "string read byte \(j)") }
                for j in (valid ? width * count : 0)..<buffer.count { precondition(buffer[j] == value, "read past the string") }
                if let t = target?.device as? Recorder { precondition(t.accesses.count == (valid ? count : 0)) }
            }
            for d in devices where d !== (target?.device as? Recorder) { precondition(d.accesses.isEmpty, "wrong port device") }
            if let t = target?.device as? Recorder {
                for a in t.accesses { precondition(a.0 == UInt64(port - target!.base) && a.1 == width) }
            }
        default:
            let a = UInt64(address & 0x7FFFF)
            let target = windows.first { a >= $0.base && a - $0.base + UInt64(width) <= $0.length }
            if kind & 3 == 2 {
                _ = buffer.withUnsafeBytes { mmioBus.write(address: a, from: UnsafeRawBufferPointer(rebasing: $0[0..<width])) }
            } else {
                buffer.withUnsafeMutableBytes { mmioBus.read(address: a, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<width])) }
                if target == nil { for j in 0..<width { precondition(buffer[j] == 0xFF, "unclaimed MMIO read") } }
            }
            for d in devices {
                if d === (target?.device as? Recorder) {
                    precondition(d.accesses.count == 1 && d.accesses[0].0 == a - target!.base && d.accesses[0].1 == width)
                } else {
                    precondition(d.accesses.isEmpty, "wrong MMIO device")
                }
            }
        }
        let stored = mailbox.store(0x1122_3344_5566_7788, in: memory)
        precondition(stored == memory.contains(mailbox.address, length: 8), "mailbox store and RAM bounds disagree")
        if stored { precondition((try! memory.read(at: mailbox.address) as UInt64) == 0x1122_3344_5566_7788) }
    }
    return 0
}
