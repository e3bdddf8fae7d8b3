// pvmm's host requests and panic reports over the system-control port (docs/boot.md):
// the power button the daemon's `stop` presses, and the report that makes pvmm record a
// crash with its vector. Under QEMU nothing answers the port: both stay off.

@_extern(c, "pvos_power_button_addr") func powerButtonAddress() -> UInt64
@_extern(c, "pvos_power_button_vector_addr") func powerButtonVectorAddress() -> UInt64
@_extern(c, "pvos_panic_report_addr") func panicReportAddress() -> UInt64

enum PowerButton {
    /// Routes pvmm's request interrupt (ISA IRQ `SysCtl.eventIRQ`) to the BSP. A press
    /// that came before the route existed is only latched in the port: look once. A pvmm
    /// without the register reads all ones there: no button.
    static func enable() {
        guard Platform.underPVMM else { return }
        let events = inl(SysCtl.port + SysCtl.eventsOffset)
        guard events != 0xFFFF_FFFF, APIC.on, let gsi = IOAPIC.routedGSI(SysCtl.eventIRQ, to: APIC.bspID) else { return }
        write64(powerButtonVectorAddress(), UInt64(Vector.ioapicBase) + UInt64(gsi))
        if events & SysCtl.eventPowerButton != 0 { write64(powerButtonAddress(), 1) }
    }

    /// Set by irq_entry; reading it costs no exit.
    static var pressed: Bool { read64(powerButtonAddress()) != 0 }

    /// Called where the shell waits for input: powers off (status 0) when pressed.
    static func check() {
        guard pressed else { return }
        outl(SysCtl.port + SysCtl.eventsOffset, SysCtl.eventPowerButton)  // acknowledge
        Console.freshLine()
        Console.write("pvos: power button pressed, powering off\n")
        VirtioConsole.drainPolled()
        Platform.powerOff(ExitStatus.ok)
    }
}

enum PanicReporter {
    /// Tells pvmm the kernel died of exception `vector` at `rip` (the VM ends as crashed
    /// with both recorded). Returns when nobody listens (QEMU): the caller powers off.
    static func report(vector: UInt64, error: UInt64, rip: UInt64, cr2: UInt64) {
        guard Platform.underPVMM else { return }
        let r = panicReportAddress()
        write64(r + UInt64(PanicReport.vector), vector)
        write64(r + UInt64(PanicReport.errorCode), error)
        write64(r + UInt64(PanicReport.rip), rip)
        write64(r + UInt64(PanicReport.cr2), cr2)
        outl(SysCtl.port + SysCtl.panicOffset, UInt32(truncatingIfNeeded: r))
    }
}
