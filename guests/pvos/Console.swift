// 8250/16550 console on COM1. Every port access is a VM exit (~20 us), so with the FIFO
// on, output checks LSR once per 16 bytes (the FIFO depth once THRE is seen). Input is
// polled from LSR; with an IOAPIC, the receive interrupt (ISA IRQ 4) wakes the idle CPU.
// Output from several CPUs is serialised by a spinlock its holder may take again.

@_extern(c, "pvos_console_lock_addr") func consoleLockAddress() -> UInt64

enum Console {
    static let base = LegacyPorts.com1
    static var txRoom = 0           // bytes the FIFO can take without checking LSR
    static var atLineStart = true
    static var fifo = false         // 16-byte FIFOs on
    static var depth = 0            // lock nesting, touched only by the holder
    static var interrupts = false   // IRQ 4 is routed through the IOAPIC
    static var ierOn = false
    static var serialLeftover = true  // the UART may hold input from before virtio-console

    static func initialize() {
        outb(base + 1, 0x00)        // IER: no interrupts until an IOAPIC routes IRQ 4
        outb(base + 3, 0x03)        // LCR: 8N1
        // Turning the FIFO on clears the receiver (a real 16550 and QEMU do; pvmm keeps
        // queued input). Piped input is often waiting already: then stay in 1-byte mode.
        // RX trigger level 1: an interrupt per byte, not after QEMU's 4-character timeout.
        if Platform.underPVMM {
            outb(base + 2, 0x07)    // FCR: enable and clear FIFOs, RX trigger 1
            fifo = true
        } else if inb(base + 5) & 0x01 == 0 {
            outb(base + 2, 0x07)
            fifo = true
            // A byte that slipped in just before was cleared, and QEMU then stops
            // feeding input until RBR is read: read the (empty) RBR once.
            if inb(base + 5) & 0x01 == 0 { _ = inb(base) }
        }
    }

    /// The IOAPIC routes IRQ 4 now (OUT2 gates the IRQ line on PC-style UARTs).
    static func enableInterrupts() {
        outb(base + 4, 0x0B)        // MCR: DTR RTS OUT2
        interrupts = true
    }

    /// IER.RDA only while waiting for input: QEMU re-raises IRQ 4 on every THR write
    /// while unread input waits, i.e. one interrupt per byte of output.
    private static func receiveInterrupt(_ on: Bool) {
        guard interrupts, on != ierOn else { return }
        outb(base + 1, on ? 0x01 : 0x00)
        ierOn = on
    }

    static func lock() {
        let me = UInt64(SMP.current().number) + 1
        let l = SpinLock(word: consoleLockAddress())
        if l.owner == me { depth += 1; return }
        l.acquire(me)
        depth = 1
    }

    static func unlock() {
        depth -= 1
        if depth == 0 { SpinLock(word: consoleLockAddress()).release() }
    }

    private static func putRaw(_ byte: UInt8) {
        if txRoom == 0 {
            while inb(base + 5) & 0x20 == 0 { cpuPause() }  // LSR.THRE: FIFO empty
            txRoom = fifo ? 16 : 1
        }
        outb(base, byte)
        txRoom -= 1
    }

    private static func emit(_ byte: UInt8) {
        if VirtioConsole.active && !Kernel.inException {   // exception reports: serial only
            if byte == 10 { VirtioConsole.put(13) }
            VirtioConsole.put(byte)
            atLineStart = byte == 10
            return
        }
        if byte == 10 { putRaw(13) }
        putRaw(byte)
        atLineStart = byte == 10
    }

    @inline(never) static func put(_ byte: UInt8) {
        lock()
        emit(byte)
        unlock()
    }

    @inline(never) static func write(_ s: StaticString) {
        lock()
        let p = s.utf8Start
        for i in 0..<s.utf8CodeUnitCount { emit(p[i]) }
        unlock()
    }

    @inline(never) static func write(_ bytes: [UInt8]) {
        lock()
        for b in bytes { emit(b) }
        unlock()
    }

    /// Starts a new line unless already at the start of one.
    static func freshLine() {
        lock()
        if !atLineStart { emit(10) }
        unlock()
    }

    static func writeDecimal(_ value: UInt64, minDigits: Int = 1) {
        lock()
        var divisor: UInt64 = 1
        var digits = 1
        while divisor <= value / 10 { divisor *= 10; digits += 1 }
        for _ in 0..<max(0, minDigits - digits) { emit(48) }
        var v = value
        while divisor > 0 {
            emit(48 + UInt8(truncatingIfNeeded: v / divisor))
            v %= divisor
            divisor /= 10
        }
        unlock()
    }

    /// `value / 1000` with three decimals (e.g. picoseconds as nanoseconds).
    static func writeMilli(_ value: UInt64) {
        lock()
        writeDecimal(value / 1000)
        emit(46)
        writeDecimal(value % 1000, minDigits: 3)
        unlock()
    }

    static func writeHex(_ value: UInt64, digits: Int = 16) {
        lock()
        var shift = digits * 4
        while shift > 0 {
            shift -= 4
            let nibble = UInt8(truncatingIfNeeded: (value >> UInt64(shift)) & 0xF)
            emit(nibble < 10 ? 48 + nibble : 87 + nibble)
        }
        unlock()
    }

    static func dataReady() -> Bool { inb(base + 5) & 0x01 != 0 }

    /// One byte if the UART has one (LSR.DR).
    static func readByte() -> UInt8? {
        if VirtioConsole.active {
            // Input that came before DRIVER_OK waits in the UART: drain it first, once.
            if serialLeftover {
                if dataReady() { return inb(base) }
                serialLeftover = false
            }
            return VirtioConsole.readByte()
        }
        return dataReady() ? inb(base) : nil
    }

    /// The next input byte, sleeping until one comes (the prompt and echo so far are
    /// sent first). The line editor (LineEditor.swift) calls `inputDone` after a line.
    static func waitByte() -> UInt8 {
        while true {
            if let c = readByte() { return c }
            PowerButton.check()
            if VirtioConsole.active {
                lock()
                VirtioConsole.flush()    // the prompt and the echo so far
                unlock()
                Idle.wait { VirtioConsole.inputReady || PowerButton.pressed }
                continue
            }
            receiveInterrupt(true)
            Idle.wait { dataReady() || PowerButton.pressed }
        }
    }

    /// The shell stops waiting for input: no receive interrupts while it works.
    static func inputDone() { receiveInterrupt(false) }

    static func readLine() -> [UInt8] { LineEditor.readLine() }
}
