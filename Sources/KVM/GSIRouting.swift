import CKVM

/// One entry of KVM's GSI routing table (KVM_SET_GSI_ROUTING): where a write to an irqfd
/// bound to `gsi`, or KVM_IRQ_LINE on it, goes.
public enum GSIRoute: Sendable, Equatable {
    /// An input pin of the in-kernel PIC (chips 0 and 1) or IOAPIC (chip 2).
    case irqchip(gsi: UInt32, chip: UInt32, pin: UInt32)
    /// A message to the local APICs (x86 MSI format, Intel SDM vol. 3 "Message Signalled
    /// Interrupts"): address 0xFEE0_0000 | destination << 12, data = vector (fixed, edge).
    /// KVM injects an MSI from the irqfd's wake-up itself; an IOAPIC input is injected from
    /// a kernel work item instead, a scheduler round trip later (~10 us on this host).
    case msi(gsi: UInt32, address: UInt64, data: UInt32)

    public static let picMaster: UInt32 = 0, picSlave: UInt32 = 1, ioapic: UInt32 = 2
    public static let ioapicPins: UInt32 = 24

    public var gsi: UInt32 {
        switch self {
        case .irqchip(let g, _, _), .msi(let g, _, _): g
        }
    }

    /// A fixed, edge-triggered MSI of `vector` to the local APIC with id `apic` (physical
    /// destination mode).
    public static func msi(gsi: UInt32, vector: UInt8, apic: UInt8) -> GSIRoute {
        .msi(gsi: gsi, address: 0xFEE0_0000 | UInt64(apic) << 12, data: UInt32(vector))
    }

    /// What KVM_CREATE_IRQCHIP sets up (kvm_setup_default_irq_routing): GSIs 0-15 to both
    /// PICs and the IOAPIC, 16-23 to the IOAPIC. KVM_SET_GSI_ROUTING replaces the whole
    /// table, so a table that changes some GSIs starts from this one.
    public static var defaultTable: [GSIRoute] {
        var t: [GSIRoute] = []
        for g in 0..<ioapicPins {
            if g < 16 { t.append(.irqchip(gsi: g, chip: g < 8 ? picMaster : picSlave, pin: g % 8)) }
            t.append(.irqchip(gsi: g, chip: ioapic, pin: g))
        }
        return t
    }

    /// The default table with every GSI of `msi` routed as an MSI instead of its pins.
    public static func table(replacing msi: [GSIRoute]) -> [GSIRoute] {
        let moved = Set(msi.map(\.gsi))
        return defaultTable.filter { !moved.contains($0.gsi) } + msi
    }

    var c: ckvm_gsi_route {
        switch self {
        case .irqchip(let g, let chip, let pin): ckvm_gsi_route(gsi: g, msi: 0, chip: chip, pin: pin, address: 0, data: 0)
        case .msi(let g, let address, let data): ckvm_gsi_route(gsi: g, msi: 1, chip: 0, pin: 0, address: address, data: data)
        }
    }
}

extension VirtualMachine {
    /// KVM_SET_GSI_ROUTING: replaces the routing table (needs the in-kernel irqchip). Best
    /// done before any irqfd is bound: each call waits for an SRCU grace period.
    public func setGSIRouting(_ routes: [GSIRoute]) throws(KVMError) {
        let entries = routes.map(\.c)
        _ = try check(entries.withUnsafeBufferPointer { ckvm_set_gsi_routing(fd, $0.baseAddress, UInt32($0.count)) },
                      "KVM_SET_GSI_ROUTING")
    }
}
