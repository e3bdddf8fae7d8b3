// The contract between pvmm and a pvmm-aware guest kernel.
//
// This file is compiled into the VMM (target PVMMABI) *and* into the guest kernel
// (Scripts/build-guest passes it to the Embedded Swift compiler), so both sides read
// the same numbers. Keep it to plain constants: no Foundation, no existentials, nothing
// Embedded Swift cannot compile. docs/boot.md explains every value.

/// The standard PVH start info (Xen `struct hvm_start_info`, version 1), as byte offsets.
/// pvmm passes it in RBX (both entries) and RSI (64-bit entry).
public enum HVMStartInfo {
    public static let magicValue: UInt32 = 0x336e_c578
    public static let size = 56
    public static let magic = 0          // u32
    public static let version = 4        // u32, 1 (has the memory map)
    public static let flags = 8          // u32
    public static let nrModules = 12     // u32
    public static let modlistPaddr = 16  // u64
    public static let cmdlinePaddr = 24  // u64, NUL-terminated
    public static let rsdpPaddr = 32     // u64, 0 when there are no ACPI tables
    public static let memmapPaddr = 40   // u64
    public static let memmapEntries = 48 // u32
    public static let reserved = 52      // u32
}

/// One `struct hvm_memmap_table_entry`: {u64 addr, u64 size, u32 type, u32 reserved}.
public enum HVMMemmapEntry {
    public static let size = 24
    public static let addr = 0
    public static let length = 8
    public static let type = 16
    public static let typeRAM: UInt32 = 1
    public static let typeReserved: UInt32 = 2
    public static let typeACPI: UInt32 = 3
}

/// One `struct hvm_modlist_entry` (the PVH start info's modules): {u64 paddr, u64 size,
/// u64 cmdline_paddr, u64 reserved}. pvmm passes at most one module, the initrd: Linux's
/// PVH code takes module 0 as its ramdisk.
public enum HVMModlistEntry {
    public static let size = 32
    public static let paddr = 0
    public static let length = 8
    public static let cmdlinePaddr = 16
    public static let reserved = 24
}

/// ELF notes that select the entry point.
public enum BootNotes {
    /// Standard PVH: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY, desc = 32-bit physical
    /// entry (4 or 8 bytes; Linux and QEMU use 8 in an ELF64 file).
    public static let xenName = "Xen"
    public static let xenPhys32Entry: UInt32 = 18
    /// pvmm's paravirtual 64-bit entry: name "PVMM", type 1, desc = u64 entry address
    /// (identity-mapped, so virtual == physical). Preferred when present.
    public static let pvmmName = "PVMM"
    public static let pvmmEntry64: UInt32 = 1
}

/// Guest-physical layout below 1 MiB (docs/boot.md). The memory map reports it reserved
/// except [lowRAMStart, lowRAMEnd); the kernel loads at >= 1 MiB.
public enum BootLayout {
    public static let pml4: UInt64 = 0x1000
    public static let pdpt: UInt64 = 0x2000
    public static let gdt: UInt64 = 0x3000
    public static let tss: UInt64 = 0x3080
    public static let modlist: UInt64 = 0x3800       // the initrd's hvm_modlist_entry
    public static let startInfo: UInt64 = 0x4000
    public static let memmap: UInt64 = 0x4040       // up to 168 entries, before the cmdline
    public static let cmdline: UInt64 = 0x5000
    public static let cmdlineMax = 4096              // including the NUL
    public static let vif: UInt64 = 0x6000           // boot vCPU's VIF page (PVM)
    public static let bootStackTop: UInt64 = 0x10000 // RSP at the 64-bit entry
    public static let pageDirectories: UInt64 = 0x10000 // one 4 KiB PD per GiB mapped
    public static let maxPageDirectories = 64        // identity map up to 64 GiB
    /// [lowRAMStart, lowRAMEnd) is usable RAM in the memory map, both entries: the room
    /// below 1 MiB a kernel needs for its real-mode AP trampoline (Linux allocates it there).
    /// Below lies pvmm's boot area (room for 64 page directories); above, the EBDA and the
    /// legacy hole, reserved.
    public static let lowRAMStart: UInt64 = 0x50000
    public static let lowRAMEnd: UInt64 = 0x9F000
    public static let acpi: UInt64 = 0xE0000         // ACPI tables (RSDP first), 128 KiB
    public static let reservedEnd: UInt64 = 0x10_0000
    /// The 64-bit entry's page tables identity-map at least this much (MMIO lives below 4 GiB).
    public static let minIdentityMap: UInt64 = 4 << 30
    /// Guest RAM stops below this hole, resumes at 4 GiB.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
}

/// GDT selectors of the 64-bit entry.
public enum BootSelectors {
    public static let code64: UInt16 = 0x08
    public static let data: UInt16 = 0x10
    public static let tss: UInt16 = 0x18 // 16-byte system descriptor (0x18 and 0x20)
    public static let code32: UInt16 = 0x28 // flat 32-bit code, for the PVH entry
}

/// The pvmm system-control port: a 32-bit `out` of a status powers the VM off and makes
/// `pvmm run` exit with that status (low 8 bits). A 32-bit `in` returns `signature`, so a
/// guest can tell it runs under pvmm. Under QEMU nothing answers there (reads 0xffffffff).
public enum SysCtl {
    public static let port: UInt16 = 0xF4
    public static let signature: UInt32 = 0x4D4D_5650 // "PVMM"
    /// Ports the device claims: 0xF4-0xFF (three 32-bit registers).
    public static let length: UInt16 = 12
    /// +4, 32-bit `in`: pending host requests (bits below); 32-bit `out`: acknowledge
    /// (write 1 to clear). Each new request raises an edge on `eventIRQ`.
    public static let eventsOffset: UInt16 = 4
    /// The host asks the guest to power off (the daemon's `stop`): a power button.
    public static let eventPowerButton: UInt32 = 1 << 0
    /// The ISA IRQ (IOAPIC input, edge, active high) of host requests: COM2's, unused.
    public static let eventIRQ: UInt8 = 3
    /// +8, 32-bit `out`: the guest panicked; the value is the guest-physical address
    /// (below 4 GiB) of a `PanicReport`. The VM ends as crashed with its vector and RIP.
    public static let panicOffset: UInt16 = 8
}

/// What a guest reports with `SysCtl.panicOffset`: four little-endian u64 at the address.
public enum PanicReport {
    public static let size = 32
    public static let vector = 0     // CPU exception vector (0-31), or 0xFFFF_FFFF for a software panic
    public static let errorCode = 8
    public static let rip = 16
    public static let cr2 = 24
    public static let softwarePanic: UInt64 = 0xFFFF_FFFF
}

/// The legacy devices pvmm emulates for early boot.
public enum LegacyPorts {
    public static let com1: UInt16 = 0x3F8
    public static let i8042Command: UInt16 = 0x64
    public static let i8042Reset: UInt8 = 0xFE
    /// Writes here are absorbed by the host's kernel on PVM (delivers a pending VIF irq).
    public static let postCode: UInt16 = 0x80
}

/// This host's PVM flavour (see shared docs host-kvm.md).
public enum PVM {
    /// VIF page registration: value = gpa | modeValid | (publishCR2).
    public static let msrVIF: UInt32 = 0x4B56_4D10
    public static let msrSignature: UInt32 = 0x4B56_4D11 // reads 0x4d5650 ("PVM")
    public static let msrFeatures: UInt32 = 0x4B56_4D12
    public static let msrTSCkHz: UInt32 = 0x4B56_4D13
    public static let signature: UInt64 = 0x4D_5650
    public static let vifModeValid: UInt64 = 1 << 10
    public static let vifPublishCR2: UInt64 = 1 << 4
    /// VIF page layout: u8 if, u8 pending, u64 cr2.
    public static let vifIF = 0
    public static let vifPending = 1
    public static let vifCR2 = 8
    public static let hypercallVector: UInt8 = 0x1B
    public static let hcFlushTLB: UInt64 = 0x1007
    public static let hcHalt: UInt64 = 0x1009
    public static let hcSetVIF: UInt64 = 0x100C
}

/// Control-register values both entries' 64-bit state uses.
public enum BootCPU {
    public static let cr0: UInt64 = 0x8005_0033    // PG AM WP NE ET MP PE
    public static let cr4: UInt64 = 0x620          // PAE OSFXSR OSXMMEXCPT (no PCIDE on PVM)
    public static let efer: UInt64 = 0x500         // LME LMA
    public static let rflags: UInt64 = 0x2
}
