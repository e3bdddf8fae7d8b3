import GuestMemory
import Snapshot
import Testing
import Virtio

/// A device with one queue that records what it was activated with.
struct OneQueueDevice: VirtioDeviceModel {
    var activated: [SplitQueue?] = []
    var deviceType: VirtioDeviceType { .console }
    var deviceFeatures: VirtioFeatures { [.ringEventIdx] }
    var queueMaxSizes: [UInt16] { [256] }
    var configSize: Int { 0 }
    mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {}
    mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {}
    mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) { activated = queues }
    mutating func reset() { activated = [] }
}

@Suite struct TransportRestoreTests {
    func state(status: UInt32 = 0x0F, features: UInt64 = 1 << 32 | 1 << 29, desc: UInt64 = 0x1000) -> MMIOTransportState {
        var t = MMIOTransportState()
        t.status = status
        t.driverFeatures = features
        t.configGeneration = 3
        t.queues = [.init(size: 256, ready: true, desc: desc, driver: 0x2000, device: 0x3000,
                          cursors: .init(nextAvail: 9, nextUsed: 8, signalledUsed: 8))]
        return t
    }

    @Test func restoresRegistersAndCursors() throws {
        let mem = try GuestMemory(size: 1 << 20)
        var t = MMIOTransport(device: OneQueueDevice(), memory: mem)
        #expect(try t.restore(state()))
        #expect(t.status.rawValue == 0x0F && t.configGeneration == 3)
        #expect(t.device.activated.first??.cursors == SplitQueue.Cursors(nextAvail: 9, nextUsed: 8, signalledUsed: 8))
        let saved = t.savedState(cursors: [t.device.activated[0]!.cursors])
        #expect(saved == state())
    }

    @Test func refusesWhatRegisterWritesWouldHaveRefused() throws {
        let mem = try GuestMemory(size: 1 << 20)
        var t = MMIOTransport(device: OneQueueDevice(), memory: mem)
        #expect(throws: TransportRestoreError.self) { try t.restore(state(desc: 0x7FFF_0000)) }  // outside RAM
        #expect(throws: TransportRestoreError.self) { try t.restore(state(desc: 0x1008)) }  // misaligned
        #expect(throws: TransportRestoreError.self) { try t.restore(state(status: 0x0D)) }  // FEATURES_OK without DRIVER
        #expect(throws: TransportRestoreError.self) { try t.restore(state(features: 1 << 40 | 1 << 32)) }  // not offered
        #expect(throws: TransportRestoreError.self) { try t.restore(state(status: 0x1FF)) }
        var wrongCount = state()
        wrongCount.queues.append(wrongCount.queues[0])
        #expect(throws: TransportRestoreError.self) { try t.restore(wrongCount) }
    }
}
