import Testing
@testable import VMM

/// What the VMM adds to a definition: device-layout limits and the guest's command line.
@Suite struct VMMConfigTests {
    func check(_ c: VMConfig) throws(VMMError) { try c.validateForHost(hostMemoryMiB: 4096, hostMaxVCPUs: 8) }

    @Test func cmdlineLimitLeavesRoomForTheDeviceEntries() throws {
        let appended = VMConfig(kernel: "k", cmdline: "x").kernelCommandLine.utf8.count - 1
        // The console's entry and pvmm_msi=, each after a space.
        #expect(appended == VirtioLayout.cmdlineEntry(slot: 0).utf8.count + 1 + VirtioLayout.msiCmdlineEntry.utf8.count + 1
                + "pvmm_poll_us=\(VMConfig.defaultPollMicroseconds)".utf8.count + 1)
        let most = VMConfig.maxCmdlineBytes - appended
        try check(VMConfig(kernel: "k", cmdline: String(repeating: "a", count: most)))
        do {
            try check(VMConfig(kernel: "k", cmdline: String(repeating: "a", count: most + 1)))
            Issue.record("accepted")
        } catch {
            guard case .invalidConfig(let e) = error else { Issue.record("\(error)"); return }
            #expect(e.field == "cmdline")
            #expect(e.message == "\(most + 1) bytes is too long: at most \(most) (the guest takes 4095; pvmm appends \(appended) bytes of device entries)")
        }
        // Without devices the whole limit is the user's.
        try check(VMConfig(kernel: "k", cmdline: String(repeating: "a", count: 4095), console: .serial))
        #expect(throws: VMMError.self) { try check(VMConfig(kernel: "k", cmdline: String(repeating: "a", count: 4096), console: .serial)) }
    }

    @Test func kernelCommandLineAppendsOneEntryPerDevice() {
        let c = VMConfig(kernel: "k", cmdline: "quiet", disks: [DiskConfig(path: "/a"), DiskConfig(path: "/b")], irqProbe: true)
        let words = c.kernelCommandLine.split(separator: " ").map(String.init)
        #expect(words == ["quiet"] + (0..<3).map { VirtioLayout.cmdlineEntry(slot: $0) } + [IRQProbe.cmdlineEntry, VirtioLayout.msiCmdlineEntry, "pvmm_poll_us=50"])
        // Polling off: drivers are not told to poll.
        #expect(!VMConfig(kernel: "k", pollMicroseconds: 0).kernelCommandLine.contains("pvmm_poll_us"))
        #expect(VMConfig(kernel: "k", console: .serial).kernelCommandLine == "")
    }

    @Test func hostLimitsNameTheField() {
        for (c, field) in [(VMConfig(kernel: "k", memoryMiB: 8192), "memory_mib"), (VMConfig(kernel: "k", cpus: 9), "cpus"),
                           (VMConfig(kernel: "k", disks: (0...VirtioLayout.maxDisks).map { DiskConfig(path: "/d\($0)") }), "disks")] {
            do { try check(c); Issue.record("accepted \(field)") } catch {
                guard case .invalidConfig(let e) = error else { Issue.record("\(error)"); continue }
                #expect(e.field == field)
            }
        }
    }
}
