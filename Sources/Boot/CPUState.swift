/// A segment register's visible and hidden parts; mirrors `struct kvm_segment` field by
/// field so the VMM converts it without decisions.
public struct SegmentState: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt32       // byte granular (already scaled by G)
    public var selector: UInt16
    public var type: UInt8         // 4-bit descriptor type
    public var present: Bool
    public var dpl: UInt8
    public var db: Bool
    public var s: Bool             // code/data (true) or system (false)
    public var l: Bool
    public var g: Bool
    public var avl: Bool
    public var unusable: Bool

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                db: Bool, s: Bool, l: Bool, g: Bool, avl: Bool = false, unusable: Bool = false) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type
        self.present = present; self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g
        self.avl = avl; self.unusable = unusable
    }

    /// Decodes an 8-byte GDT descriptor (the low half of a 16-byte system descriptor;
    /// pass `high` for the upper 32 bits of a 64-bit TSS base).
    public init(descriptor d: UInt64, high: UInt64 = 0, selector: UInt16) {
        let base = (d >> 16) & 0xFF_FFFF | ((d >> 56) & 0xFF) << 24 | (high & 0xFFFF_FFFF) << 32
        let rawLimit = UInt32(d & 0xFFFF) | UInt32((d >> 48) & 0xF) << 16
        let g = (d >> 55) & 1 == 1
        self.init(base: base, limit: g ? rawLimit << 12 | 0xFFF : rawLimit, selector: selector,
                  type: UInt8((d >> 40) & 0xF), present: (d >> 47) & 1 == 1, dpl: UInt8((d >> 45) & 3),
                  db: (d >> 54) & 1 == 1, s: (d >> 44) & 1 == 1, l: (d >> 53) & 1 == 1, g: g,
                  avl: (d >> 52) & 1 == 1)
    }

    /// The LDTR state when no LDT is used.
    public static let noLDT = SegmentState(base: 0, limit: 0, selector: 0, type: 2, present: false, dpl: 0,
                                           db: false, s: false, l: false, g: false, unusable: true)
}

/// GDTR / IDTR (`struct kvm_dtable`).
public struct TableState: Sendable, Equatable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64, limit: UInt16) { self.base = base; self.limit = limit }
}

/// The boot vCPU's registers at the first KVM_RUN. Registers not listed are zero.
public struct InitialCPUState: Sendable, Equatable {
    public var rip: UInt64
    public var rsp: UInt64
    public var rbx: UInt64
    public var rsi: UInt64
    public var rflags: UInt64
    public var cr0: UInt64
    public var cr3: UInt64
    public var cr4: UInt64
    public var efer: UInt64
    public var cs: SegmentState
    public var ds: SegmentState
    public var es: SegmentState
    public var fs: SegmentState
    public var gs: SegmentState
    public var ss: SegmentState
    public var tr: SegmentState
    public var ldt: SegmentState
    public var gdt: TableState
    public var idt: TableState
}
