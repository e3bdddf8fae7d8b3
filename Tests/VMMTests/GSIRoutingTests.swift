import KVM
import Testing
@testable import VMM

/// The routing table pvmm gives KVM: KVM's default pins for the legacy GSIs, an MSI for
/// every virtio and probe GSI (VirtioLayout, "Delivery").
struct GSIRoutingTests {
    @Test func defaultTableIsKVMs() {
        let t = GSIRoute.defaultTable
        // 16 GSIs on a PIC and the IOAPIC, 8 more on the IOAPIC only.
        #expect(t.count == 16 * 2 + 8)
        #expect(t.contains(.irqchip(gsi: 4, chip: GSIRoute.picMaster, pin: 4)))
        #expect(t.contains(.irqchip(gsi: 12, chip: GSIRoute.picSlave, pin: 4)))
        #expect(t.contains(.irqchip(gsi: 23, chip: GSIRoute.ioapic, pin: 23)))
    }

    @Test func virtioGSIsBecomeMSIsAndLegacyOnesStayPins() {
        let t = GSIRoute.table(replacing: VirtioLayout.msiRoutes)
        for g in UInt32(0)..<24 {
            let routes = t.filter { $0.gsi == g }
            if g < VirtioLayout.firstGSI {
                // COM1 (4) and the host-request line (3) stay IOAPIC inputs.
                #expect(routes.contains(.irqchip(gsi: g, chip: GSIRoute.ioapic, pin: g)), "gsi \(g)")
            } else {
                // Exactly one route: an MSI of vector 0x30 + GSI to APIC 0, edge, fixed.
                #expect(routes == [.msi(gsi: g, address: 0xFEE0_0000, data: 0x30 + g)], "gsi \(g)")
            }
        }
        #expect(VirtioLayout.gsi(slot: VirtioLayout.slotCount - 1) <= VirtioLayout.lastMSIGSI)
        #expect(VirtioLayout.msiCmdlineEntry == "pvmm_msi=0x30")
    }

    @Test func msiDestinationIsInTheAddress() {
        #expect(GSIRoute.msi(gsi: 9, vector: 0x41, apic: 3) == .msi(gsi: 9, address: 0xFEE0_3000, data: 0x41))
    }
}
