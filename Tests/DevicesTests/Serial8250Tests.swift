import Devices
import Synchronization
import Testing

/// Records what the UART sends.
final class RecordingSink: ByteSink {
    let bytes = Mutex<[UInt8]>([])
    func write(_ b: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: b) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

final class RecordingLine: InterruptLine {
    let level = Mutex(false)
    func set(_ l: Bool) { level.withLock { $0 = l } }
    var isHigh: Bool { level.withLock { $0 } }
}

extension PortDevice {
    func inb(_ offset: UInt16) -> UInt8 {
        var b: UInt8 = 0
        withUnsafeMutableBytes(of: &b) { read(offset: offset, into: $0) }
        return b
    }
    @discardableResult
    func outb(_ offset: UInt16, _ v: UInt8) -> DeviceAction {
        withUnsafeBytes(of: v) { write(offset: offset, from: $0) }
    }
    func inl(_ offset: UInt16) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { read(offset: offset, into: $0) }
        return v
    }
    func outl(_ offset: UInt16, _ v: UInt32) -> DeviceAction {
        withUnsafeBytes(of: v) { write(offset: offset, from: $0) }
    }
}

func feed(_ uart: Serial8250, _ s: String) -> Int {
    Array(s.utf8).withUnsafeBytes { uart.receive($0) }
}

@Suite struct Serial8250Tests {
    @Test func transmitGoesToSinkAndNeverStalls() {
        let sink = RecordingSink()
        let uart = Serial8250(sink: sink)
        #expect(uart.inb(5) & 0x60 == 0x60) // THRE and TEMT
        for b in "hi\n".utf8 { uart.outb(0, b) }
        #expect(sink.text == "hi\n")
        #expect(uart.inb(5) & 0x60 == 0x60)
    }

    @Test func receiveSetsDataReadyAndReadsInOrder() {
        let uart = Serial8250(sink: RecordingSink())
        #expect(uart.inb(5) & 1 == 0)
        #expect(feed(uart, "ab") == 2)
        #expect(uart.inb(5) & 1 == 1)
        #expect(uart.inb(0) == UInt8(ascii: "a"))
        #expect(uart.inb(0) == UInt8(ascii: "b"))
        #expect(uart.inb(5) & 1 == 0)
        #expect(uart.inb(0) == 0) // empty RBR reads 0, no crash
    }

    @Test func fullBufferAppliesBackPressureWithoutLoss() {
        let uart = Serial8250(sink: RecordingSink())
        let big = [UInt8](repeating: 0x41, count: Serial8250.rxCapacity + 100)
        let taken = big.withUnsafeBytes { uart.receive($0) }
        #expect(taken == Serial8250.rxCapacity)
        #expect(uart.pendingInput == Serial8250.rxCapacity)
        _ = uart.inb(0)
        #expect(feed(uart, "z") == 1)
    }

    @Test func fifoResetKeepsQueuedHostInput() {
        let uart = Serial8250(sink: RecordingSink())
        _ = feed(uart, "x")
        uart.outb(2, 0x07) // enable + clear FIFOs, as a driver does at init
        #expect(uart.inb(0) == UInt8(ascii: "x"))
        #expect(uart.inb(2) & 0xC0 == 0xC0) // FIFO enabled reported in IIR
    }

    @Test func divisorLatchIsSeparateFromData() {
        let sink = RecordingSink()
        let uart = Serial8250(sink: sink)
        uart.outb(3, 0x80) // DLAB
        uart.outb(0, 0x01)
        uart.outb(1, 0x00)
        #expect(uart.inb(0) == 0x01)
        uart.outb(3, 0x03)
        #expect(sink.text.isEmpty) // the divisor write was not output
        #expect(uart.inb(3) == 0x03)
    }

    @Test func loopbackEchoesAndMirrorsModemLines() {
        let sink = RecordingSink()
        let uart = Serial8250(sink: sink)
        uart.outb(4, 0x10 | 0x0F) // loopback + DTR RTS OUT1 OUT2
        uart.outb(0, 0x55)
        #expect(sink.text.isEmpty)
        #expect(uart.inb(0) == 0x55)
        #expect(uart.inb(6) & 0xF0 == 0xF0)
    }

    @Test func interruptIdentificationAndLine() {
        let line = RecordingLine()
        let uart = Serial8250(sink: RecordingSink(), irq: line)
        #expect(uart.inb(2) & 0x0F == 0x01) // no interrupt
        uart.outb(1, 0x01) // RX available interrupts
        _ = feed(uart, "q")
        #expect(line.isHigh)
        #expect(uart.inb(2) & 0x0F == 0x04)
        _ = uart.inb(0)
        #expect(!line.isHigh)
        uart.outb(1, 0x02) // THRE interrupt fires at once: the register is empty
        #expect(uart.inb(2) & 0x0F == 0x02)
        #expect(uart.inb(2) & 0x0F == 0x01) // reading IIR cleared it
    }

    @Test func scratchRegister() {
        let uart = Serial8250(sink: RecordingSink())
        uart.outb(7, 0xA5)
        #expect(uart.inb(7) == 0xA5)
    }
}

@Suite struct SystemDevicesTests {
    @Test func sysctlPowersOffOnlyOnFullWrite() {
        let s = SystemControl()
        #expect(s.inl(0) == 0x4D4D_5650)
        #expect(s.outb(0, 1) == .none)
        #expect(s.outl(0, 7) == .powerOff(status: 7))
    }

    @Test func i8042ResetOnlyOnCommandFE() {
        let k = I8042()
        #expect(k.outb(4, 0xFE) == .reset)
        #expect(k.outb(4, 0xAA) == .none)
        #expect(k.outb(0, 0xFE) == .none)
    }

    @Test func busRoutesAndRejectsOverlap() throws {
        let sink = RecordingSink()
        let uart = Serial8250(sink: sink)
        let bus = try PortBus([.init(base: 0x3F8, length: 8, device: uart), .init(base: 0xF4, length: 4, device: SystemControl())])
        _ = withUnsafeBytes(of: UInt8(ascii: "k")) { bus.write(port: 0x3F8, from: $0) }
        #expect(sink.text == "k")
        var v: UInt8 = 0
        withUnsafeMutableBytes(of: &v) { bus.read(port: 0x2F8, into: $0) }
        #expect(v == 0xFF) // unclaimed port floats high
        var wide: UInt32 = 0
        withUnsafeMutableBytes(of: &wide) { bus.read(port: 0x3FE, into: $0) }
        #expect(wide == 0xFFFF_FFFF) // an access straddling the UART's end belongs to no device
        #expect(throws: BusError.overlap(base: 0x3FC)) {
            try PortBus([.init(base: 0x3F8, length: 8, device: uart), .init(base: 0x3FC, length: 4, device: SystemControl())])
        }
    }
}
