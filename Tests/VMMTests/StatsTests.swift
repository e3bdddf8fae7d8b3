import Devices
import Testing
@testable import VMM

/// VM exit counts and device counters share one counter type (StatCounter).
@Suite struct StatsTests {
    @Test func exitCountsAddUpAcrossThreads() async {
        let stats = VMStats(devices: [DeviceStats(name: "blk0")])
        await withTaskGroup(of: Void.self) { g in
            for _ in 0..<4 { g.addTask { for _ in 0..<1000 { stats.pio.add(); stats.mmio.add(2) } } }
        }
        stats.interrupted.add(7)   // kicks are not exits
        #expect(stats.pio.value == 4000 && stats.mmio.value == 8000)
        #expect(stats.totalExits == 12_000)
        let counters: [StatCounter] = [stats.pio, stats.devices[0].requests]   // one type for both
        #expect(counters.map(\.value) == [4000, 0])
    }
}
