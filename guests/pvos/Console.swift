// Polled 8250/16550 console on COM1. Every port access is a VM exit (~20 us), so with
// the FIFO on, output checks LSR once per 16 bytes (the FIFO depth once THRE is seen).

enum Console {
    static let base = LegacyPorts.com1
    static var txRoom = 0           // bytes the FIFO can take without checking LSR
    static var atLineStart = true
    static var lastWasCR = false    // swallow the LF of a CR LF pair
    static let maxLine = 256
    static var fifo = false         // 16-byte FIFOs on

    static func initialize() {
        outb(base + 1, 0x00)        // IER: polled, no interrupts
        outb(base + 3, 0x03)        // LCR: 8N1
        // Turning the FIFO on clears the receiver (a real 16550 and QEMU do; pvmm keeps
        // queued input). Piped input is often waiting already: then stay in 1-byte mode.
        if Platform.underPVMM {
            outb(base + 2, 0xC7)    // FCR: enable and clear FIFOs, RX trigger 14
            fifo = true
        } else if inb(base + 5) & 0x01 == 0 {
            outb(base + 2, 0xC7)
            fifo = true
            // A byte that slipped in just before was cleared, and QEMU then stops
            // feeding input until RBR is read: read the (empty) RBR once.
            if inb(base + 5) & 0x01 == 0 { _ = inb(base) }
        }
    }

    private static func putRaw(_ byte: UInt8) {
        if txRoom == 0 {
            while inb(base + 5) & 0x20 == 0 { cpuPause() }  // LSR.THRE: FIFO empty
            txRoom = fifo ? 16 : 1
        }
        outb(base, byte)
        txRoom -= 1
    }

    @inline(never) static func put(_ byte: UInt8) {
        if byte == 10 { putRaw(13) }
        putRaw(byte)
        atLineStart = byte == 10
    }

    @inline(never) static func write(_ s: StaticString) {
        let p = s.utf8Start
        for i in 0..<s.utf8CodeUnitCount { put(p[i]) }
    }

    @inline(never) static func write(_ bytes: [UInt8]) {
        for b in bytes { put(b) }
    }

    /// Starts a new line unless already at the start of one.
    static func freshLine() {
        if !atLineStart { put(10) }
    }

    static func writeDecimal(_ value: UInt64, minDigits: Int = 1) {
        var divisor: UInt64 = 1
        var digits = 1
        while divisor <= value / 10 { divisor *= 10; digits += 1 }
        for _ in 0..<max(0, minDigits - digits) { put(48) }
        var v = value
        while divisor > 0 {
            put(48 + UInt8(truncatingIfNeeded: v / divisor))
            v %= divisor
            divisor /= 10
        }
    }

    static func writeHex(_ value: UInt64, digits: Int = 16) {
        var shift = digits * 4
        while shift > 0 {
            shift -= 4
            let nibble = UInt8(truncatingIfNeeded: (value >> UInt64(shift)) & 0xF)
            put(nibble < 10 ? 48 + nibble : 87 + nibble)
        }
    }

    /// One byte if the UART has one (LSR.DR).
    static func readByte() -> UInt8? {
        inb(base + 5) & 0x01 != 0 ? inb(base) : nil
    }

    /// Reads a line with echo and minimal editing. Bytes after the newline stay in the
    /// UART FIFO for the next call, so piped input is never dropped.
    static func readLine() -> [UInt8] {
        var line: [UInt8] = []
        while true {
            guard let c = readByte() else { Platform.idle(); continue }
            if c == 10 && lastWasCR { lastWasCR = false; continue }
            lastWasCR = c == 13
            switch c {
            case 10, 13:
                put(10)
                return line
            case 8, 127:
                if !line.isEmpty { line.removeLast(); write("\u{8} \u{8}") }
            case 21:  // Ctrl-U: erase the whole line
                while !line.isEmpty { line.removeLast(); write("\u{8} \u{8}") }
            default:
                if c >= 32 && c < 127 && line.count < maxLine { line.append(c); put(c) }
            }
        }
    }
}
