import Devices
import GuestMemory
import Testing
import Virtio

typealias ConsoleDriver = FakeDriver<VirtioConsoleModel>

/// A virtio-console on a recording sink; `service` is the same recorder as the driver's.
func consoleDevice(start: Bool = true, features: VirtioFeatures = [.ringEventIdx]) throws -> (ConsoleDriver, RecordingSink) {
    let sink = RecordingSink()
    let service = RecordingNotifier()
    let d = try ConsoleDriver(model: VirtioConsoleModel(backend: VirtioConsoleBackend(sink: sink, service: service)))
    if start { d.start(features: features) }
    return (d, sink)
}

extension ConsoleDriver {
    var backend: VirtioConsoleBackend { device.backend }

    /// Offers `bytes` as host input until all were taken, running the device side in
    /// between (as the feeder's retry and the device thread would).
    func feed(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { backend.receive($0) }
    }

    /// Posts `count` receive buffers of `size` bytes.
    func postReceive(_ count: Int, size: UInt32) throws -> [Buffer] {
        var out: [Buffer] = []
        for _ in 0..<count {
            let b = try buffer(size, fill: 0xEE)
            try queues[VirtioCon.receiveQueue].post(writable: [b])
            out.append(b)
        }
        return out
    }

    /// The bytes delivered in receive used entries [from, to).
    func received(_ buffers: [Buffer], used range: Range<UInt16>) throws -> [UInt8] {
        var out: [UInt8] = []
        for i in range {
            let e = try queues[VirtioCon.receiveQueue].usedElement(i)
            let b = buffers[Int(e.id)]  // heads are posted one descriptor each, in order
            out += try mem.readBytes(at: b.addr, count: Int(e.len))
        }
        return out
    }
}

@Suite struct VirtioConsoleTests {
    @Test func transmitGoesToTheSink() throws {
        let (d, sink) = try consoleDevice()
        try d.queues[VirtioCon.transmitQueue].post(readable: [try d.buffer(Array("hel".utf8)), try d.buffer(Array("lo\n".utf8))])
        try d.queues[VirtioCon.transmitQueue].post(readable: [try d.buffer(Array("again".utf8))])
        d.kick(VirtioCon.transmitQueue)
        #expect(sink.text == "hello\nagain")
        #expect(try d.queues[VirtioCon.transmitQueue].usedIdx() == 2)
        #expect(try d.queues[VirtioCon.transmitQueue].usedElement(0).len == 0)
        #expect(d.irq.signals == 1)
    }

    @Test func inputWaitsForBuffersWithoutLoss() throws {
        let (d, _) = try consoleDevice()
        #expect(d.backend.receiveReady)
        let input = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        #expect(d.feed(input) == input.count)
        // No buffer posted yet: nothing consumed, and the device asked to hear of the next one.
        #expect(d.device.backend.serviceRequested().requests == 0)
        #expect(d.backend.pendingInput == 5000)
        #expect(try d.queues[VirtioCon.receiveQueue].availEvent() == 0)
        var buffers: [Buffer] = []
        var delivered: [UInt8] = []
        var used: UInt16 = 0
        // The guest posts a few small buffers at a time, as a slow reader would.
        while delivered.count < input.count {
            buffers += try d.postReceive(3, size: 700)
            d.kick(VirtioCon.receiveQueue)
            let now = try d.queues[VirtioCon.receiveQueue].usedIdx()
            #expect(now > used)
            delivered += try d.received(buffers, used: used..<now)
            used = now
        }
        #expect(delivered == input)
        #expect(d.backend.pendingInput == 0)
        // Buffers left over are not consumed without input.
        let spare = try d.postReceive(2, size: 64)
        buffers += spare
        d.kick(VirtioCon.receiveQueue)
        #expect(try d.queues[VirtioCon.receiveQueue].usedIdx() == used)
        // New input fills them (the service eventfd path).
        #expect(d.feed(Array("xy".utf8)) == 2)
        d.device.serviceRequested()
        #expect(try d.queues[VirtioCon.receiveQueue].usedIdx() == used + 1)
        #expect(try d.received(buffers, used: used..<used + 1) == Array("xy".utf8))
    }

    @Test func backPressureWhenTheBufferIsFull() throws {
        let (d, _) = try consoleDevice()
        let big = [UInt8](repeating: 7, count: VirtioCon.pendingCapacity + 100)
        #expect(d.feed(big) == VirtioCon.pendingCapacity)
        #expect(d.feed([1]) == 0)
        _ = try d.postReceive(1, size: 100)
        d.kick(VirtioCon.receiveQueue)
        #expect(d.feed(Array(repeating: 1, count: 200)) == 100)
    }

    @Test func inputBeforeDriverOKIsKept() throws {
        let (d, _) = try consoleDevice(start: false)
        #expect(!d.backend.receiveReady)
        #expect(d.feed(Array("early".utf8)) == 5)
        d.start(features: [.ringEventIdx])
        #expect(d.backend.receiveReady)
        let b = try d.postReceive(1, size: 64)
        d.device.serviceRequested()  // what DRIVER_OK's service signal triggers
        #expect(try d.received(b, used: 0..<1) == Array("early".utf8))
    }

    @Test func resetAndFailureStopInputRouting() throws {
        let (d, _) = try consoleDevice()
        d.w32(MMIORegister.status, 0)
        #expect(!d.backend.receiveReady)
        d.start(features: [.ringEventIdx])
        #expect(d.backend.receiveReady)
        // A chain whose buffer lies outside RAM: DEVICE_NEEDS_RESET, input back to the 8250.
        #expect(d.feed([1]) == 1)
        try d.queues[VirtioCon.receiveQueue].post(writable: [Buffer(addr: 0x7FFF_0000_0000, len: 16)])
        d.kick(VirtioCon.receiveQueue)
        #expect(d.status.contains(.deviceNeedsReset))
        #expect(!d.backend.receiveReady)
        #expect(d.log.all.count == 1)
    }

    @Test func noReceiveQueueMeansNoRouting() throws {
        let (d, _) = try consoleDevice(start: false)
        d.start(features: [], enable: [false, true])
        #expect(d.status.contains(.driverOK))
        #expect(!d.backend.receiveReady)
    }

    @Test func emergencyWriteAndConfig() throws {
        let (d, sink) = try consoleDevice(start: false)
        #expect(d.r32(MMIORegister.deviceID) == 3)
        #expect(d.r32(0x104) == 1)  // max_nr_ports
        d.w32(0x108, UInt32(UInt8(ascii: "!")))
        #expect(sink.text == "!")
    }

    @Test func eventIdxOnTransmit() throws {
        let (d, sink) = try consoleDevice()
        try d.queues[VirtioCon.transmitQueue].setUsedEvent(5)
        for _ in 0..<3 { try d.queues[VirtioCon.transmitQueue].post(readable: [try d.buffer([65])]) }
        d.kick(VirtioCon.transmitQueue)
        #expect(sink.text == "AAA")
        #expect(d.irq.signals == 0)
        for _ in 0..<3 { try d.queues[VirtioCon.transmitQueue].post(readable: [try d.buffer([66])]) }
        d.kick(VirtioCon.transmitQueue)
        #expect(d.irq.signals == 1)  // used.idx went 3 -> 6, past used_event 5
    }
}
