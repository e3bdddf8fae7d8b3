// libFuzzer entry for the 8250/16550A register emulation (Devices/Serial8250.swift):
// arbitrary bytes become guest port reads and writes of any width at any offset, mixed
// with host input. A reference model checks what the guest can observe: bytes come out
// of RBR in the order they were received (host input, then loopback), THR writes reach
// the sink exactly when DLAB is clear and loopback off, LSR.DR says whether input waits,
// the interrupt line follows IIR, and the receive buffer stays within its capacity.
// Built and run by Scripts/fuzz-8250.
//
// Input: 3-byte operations: kind (bits 0-1: 0 write, 1 read, 2 host input of `value`
// bytes, 3 write with DLAB forced clear first; bits 2-3 width 1/2/4/4), offset (0-7 and,
// rarely, beyond), value.
import Devices

final class Sink: ByteSink, @unchecked Sendable {
    var bytes: [UInt8] = []
    func write(_ b: UnsafeRawBufferPointer) { bytes += b }
}

final class Line: InterruptLine, @unchecked Sendable {
    var level = false
    func set(_ l: Bool) { level = l }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz8250(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let sink = Sink(), line = Line()
    let uart = Serial8250(sink: sink, irq: line)
    // The model: registers the guest can observe.
    var lcr: UInt8 = 0x03, mcr: UInt8 = 0x08, ier: UInt8 = 0
    var rx: [UInt8] = [], rxHead = 0
    var expectedOut: [UInt8] = []
    var feed: UInt8 = 0
    var buf = [UInt8](repeating: 0, count: 4)
    var host = [UInt8](repeating: 0, count: 255)
    // The sink is compared incrementally (each operation adds at most one byte): a
    // compare of the whole output per operation made the target quadratic (3,000 exec/s).
    var checkedOut = 0

    var i = 0
    while i + 3 <= input.count {
        let kind = input[i], offset = UInt16(input[i + 1] & 0x8F), value = input[i + 2]
        i += 3
        let width = min(1 << (Int(kind >> 2) & 3), 4)
        switch kind & 3 {
        case 2:
            let count = Int(value)
            for j in 0..<count { host[j] = feed; feed &+= 1 }
            let n = host.withUnsafeBytes { uart.receive(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            precondition(n <= count)
            precondition(n == min(count, Serial8250.rxCapacity - (rx.count - rxHead)), "accepted \(n)")
            rx += host[0..<n]
        case 1:
            for j in 0..<4 { buf[j] = 0xEE }
            buf.withUnsafeMutableBytes { uart.read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<width])) }
            let v = buf[0]
            for j in width..<4 { precondition(buf[j] == 0xEE, "read wrote past its width") }
            for j in 1..<width { precondition(buf[j] == 0, "upper bytes of a wider read") }
            let dlab = lcr & 0x80 != 0
            switch offset {
            case 0 where !dlab:
                if rxHead < rx.count { precondition(v == rx[rxHead], "RBR out of order"); rxHead += 1 } else { precondition(v == 0) }
            case 1 where !dlab: precondition(v == ier)
            case 3: precondition(v == lcr)
            case 4: precondition(v == mcr)
            case 5: precondition((v & 1 != 0) == (rxHead < rx.count) && v & 0x60 == 0x60, "LSR \(v)")
            default: break
            }
        default:
            if kind & 3 == 3 {
                let cleared = lcr & 0x7F
                _ = withUnsafeBytes(of: cleared) { uart.write(offset: 3, from: $0) }
                lcr &= 0x7F
            }
            buf[0] = value
            for j in 1..<4 { buf[j] = 0x55 }
            let action = buf.withUnsafeBytes { uart.write(offset: offset, from: UnsafeRawBufferPointer(rebasing: $0[0..<width])) }
            precondition(action == .none)
            let dlab = lcr & 0x80 != 0
            switch offset {
            case 0 where !dlab:
                if mcr & 0x10 != 0 {
                    if rx.count - rxHead < Serial8250.rxCapacity { rx.append(value) }
                } else {
                    expectedOut.append(value)
                }
            case 1 where !dlab: ier = value & 0x0F
            case 3: lcr = value
            case 4: mcr = value & 0x1F
            default: break
            }
        }
        precondition(sink.bytes.count == expectedOut.count, "sink differs from THR writes")
        while checkedOut < expectedOut.count {
            precondition(sink.bytes[checkedOut] == expectedOut[checkedOut], "sink differs from THR writes")
            checkedOut += 1
        }
        precondition(uart.pendingInput == rx.count - rxHead && uart.pendingInput <= Serial8250.rxCapacity)
        // The line is high exactly when IIR reports a cause (IIR bit 0 clear), which a
        // THRE cause clears on read, so only the receive cause is predictable here.
        if ier & 1 != 0 && rxHead < rx.count { precondition(line.level, "RX interrupt not raised") }
        if ier == 0 { precondition(!line.level, "line high with IER 0") }
        if rx.count > 1 << 16 { rx.removeFirst(rxHead); rxHead = 0 }
    }
    return 0
}
