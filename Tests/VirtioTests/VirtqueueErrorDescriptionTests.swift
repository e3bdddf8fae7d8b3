import Testing
import Virtio

/// Log sentences: hex addresses, the rule broken, loops reported as loops.
@Suite struct VirtqueueErrorDescriptionTests {
    @Test func sentencesNameTheRuleWithHexAddresses() {
        #expect(VirtqueueError.bufferOutsideMemory(head: 0, address: 139_637_976_727_552, length: 16).description
            == "chain 0 has a buffer at 0x7f0000000000 (16 bytes) that is not inside guest RAM")
        #expect(VirtqueueError.descriptorLoop(head: 3, index: 4, indirect: false).description
            == "chain 3 loops back to descriptor 4 (a chain must end: §2.7.5.3.1)")
        #expect(VirtqueueError.descriptorLoop(head: 0, index: 1, indirect: true).description.hasPrefix(
            "chain 0 loops back to entry 1 of its indirect table"))
        #expect(VirtqueueError.misalignedArea(.usedRing, address: 0x1002, alignment: 4).description
            == "the used ring at 0x1002 is not 4-byte aligned (§2.7)")
        #expect(VirtqueueError.availIndexTooFarAhead(availIdx: 300, lastAvail: 10, size: 256).description
            == "avail.idx 300 is 290 entries past the last one the device took (10): more than the queue size 256 (§2.7.13)")
        #expect(VirtqueueError.memory(.outOfRange(address: 0xdead_0000, length: 8)).description
            == "guest memory: 0xdead0000 (8 bytes) is not inside guest RAM")
    }

    /// No case falls back to Swift's enum dump.
    @Test func noSentenceIsAnEnumDump() {
        let all: [VirtqueueError] = [
            .badQueueSize(size: 3, max: 256), .misalignedArea(.descriptorTable, address: 1, alignment: 16),
            .areaOutsideMemory(.availableRing, address: 1 << 40, length: 6), .availIndexTooFarAhead(availIdx: 1, lastAvail: 2, size: 4),
            .headOutOfRange(head: 9, size: 8), .nextOutOfRange(head: 0, index: 1, next: 9, indirect: false),
            .descriptorLoop(head: 0, index: 0, indirect: false), .chainTooLong(head: 0, limit: 8),
            .indirectNotNegotiated(head: 0, index: 0), .badIndirectLength(head: 0, index: 0, length: 3),
            .nestedIndirect(head: 0, index: 0), .indirectWithNext(head: 0, index: 0),
            .readableAfterWritable(head: 0, index: 1, indirect: true), .bufferOutsideMemory(head: 0, address: 1, length: 1),
            .chainTooLarge(head: 0), .bufferTooShort(needed: 16, available: 3), .memory(.overflow(address: 1, length: 2)),
        ]
        for e in all {
            let s = e.description
            #expect(!s.contains("(head:") && !s.contains("address: ") && !s.contains("Optional"), "\(s)")
        }
    }
}
