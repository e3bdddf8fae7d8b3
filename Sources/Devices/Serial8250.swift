import Synchronization

/// Where a console device's output goes: the terminal for `pvmm run`, a socket later.
public protocol ByteSink: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer)
}

/// An interrupt line a device can raise or lower (no-op until an irqchip exists).
public protocol InterruptLine: AnyObject, Sendable {
    func set(_ level: Bool)
}

/// A 16550A UART (the PC's 8250 family) at eight consecutive ports, as Linux's 8250 driver
/// and our guest expect it. Transmit never stalls (THRE and TEMT always set): output goes
/// straight to the sink. Received bytes queue in a buffer much deeper than the 16-byte
/// FIFO so bytes piped in faster than the guest reads are never dropped; `receive`
/// reports how many fit, and the feeder retries the rest (back-pressure, not loss).
public final class Serial8250: PortDevice {
    // Register offsets (DLAB=0 unless noted).
    static let RBR_THR: UInt16 = 0, IER: UInt16 = 1, IIR_FCR: UInt16 = 2, LCR: UInt16 = 3
    static let MCR: UInt16 = 4, LSR: UInt16 = 5, MSR: UInt16 = 6, SCR: UInt16 = 7

    static let lsrDataReady: UInt8 = 0x01, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40
    static let ierRxAvailable: UInt8 = 0x01, ierTHRE: UInt8 = 0x02
    static let iirNone: UInt8 = 0x01, iirTHRE: UInt8 = 0x02, iirRx: UInt8 = 0x04, iirFIFO: UInt8 = 0xC0
    static let lcrDLAB: UInt8 = 0x80, mcrLoopback: UInt8 = 0x10, mcrOut2: UInt8 = 0x08

    public static let rxCapacity = 4096

    struct State {
        var ier: UInt8 = 0, lcr: UInt8 = 0x03, mcr: UInt8 = mcrOut2, scr: UInt8 = 0
        var dll: UInt8 = 0x0C, dlm: UInt8 = 0, fifoEnabled = false
        /// Set on THR write when IER.THRE, cleared by reading IIR (16550 semantics).
        var thrInterruptPending = false
        var rx = ByteFIFO(capacity: rxCapacity)

        var interruptIdentification: UInt8 {
            if ier & ierRxAvailable != 0 && !rx.isEmpty { return iirRx }
            if ier & ierTHRE != 0 && thrInterruptPending { return iirTHRE }
            return iirNone
        }
    }

    let state = Mutex(State())
    let sink: any ByteSink
    let irq: (any InterruptLine)?

    public init(sink: any ByteSink, irq: (any InterruptLine)? = nil) {
        self.sink = sink
        self.irq = irq
    }

    /// Queues host input for the guest. Returns how many bytes were accepted.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        let (n, level) = state.withLock { s -> (Int, Bool) in
            let n = s.rx.append(bytes)
            return (n, s.interruptIdentification != Self.iirNone)
        }
        if n > 0 { irq?.set(level) }
        return n
    }

    /// Power-on register state for a reboot; host input not yet read stays queued (it was
    /// typed for the guest, whichever boot reads it).
    public func reset() {
        state.withLock { s in
            let rx = s.rx
            s = State()
            s.rx = rx
        }
        irq?.set(false)
    }

    /// The registers a snapshot saves (8 bytes: IER LCR MCR SCR DLL DLM, FIFO enable,
    /// THRE interrupt pending). Host input not yet read is the host's, not the guest's:
    /// it is not saved.
    public func savedRegisters() -> [UInt8] {
        state.withLock { s in [s.ier, s.lcr, s.mcr, s.scr, s.dll, s.dlm, s.fifoEnabled ? 1 : 0, s.thrInterruptPending ? 1 : 0] }
    }

    /// Puts saved registers back, masked as guest writes would be; false unless 8 bytes.
    public func restoreRegisters(_ r: [UInt8]) -> Bool {
        guard r.count == 8 else { return false }
        let level = state.withLock { s -> Bool in
            s.ier = r[0] & 0x0F
            s.lcr = r[1]
            s.mcr = r[2] & 0x1F
            s.scr = r[3]
            s.dll = r[4]
            s.dlm = r[5]
            s.fifoEnabled = r[6] & 1 != 0
            s.thrInterruptPending = r[7] & 1 != 0
            return s.interruptIdentification != Self.iirNone
        }
        irq?.set(level)
        return true
    }

    /// Bytes waiting for the guest to read.
    public var pendingInput: Int { state.withLock { $0.rx.count } }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        var level = false
        let v: UInt8 = state.withLock { s in
            defer { level = s.interruptIdentification != Self.iirNone }
            let dlab = s.lcr & Self.lcrDLAB != 0
            switch offset {
            case Self.RBR_THR: return dlab ? s.dll : (s.rx.pop() ?? 0)
            case Self.IER: return dlab ? s.dlm : s.ier
            case Self.IIR_FCR:
                let iir = s.interruptIdentification
                if iir == Self.iirTHRE { s.thrInterruptPending = false }
                return iir | (s.fifoEnabled ? Self.iirFIFO : 0)
            case Self.LCR: return s.lcr
            case Self.MCR: return s.mcr
            case Self.LSR: return Self.lsrTHRE | Self.lsrTEMT | (!s.rx.isEmpty ? Self.lsrDataReady : 0)
            case Self.MSR:
                // In loopback the modem inputs mirror MCR outputs (drivers probe this);
                // otherwise report carrier, DSR and CTS so a getty-style reader proceeds.
                if s.mcr & Self.mcrLoopback != 0 {
                    let m = s.mcr
                    return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
                }
                return 0xB0
            case Self.SCR: return s.scr
            default: return 0xFF
            }
        }
        data.storeLittleEndian(UInt64(v))
        irq?.set(level)
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard let v = data.first else { return .none }
        var out: UInt8? = nil
        let level: Bool = state.withLock { s in
            let dlab = s.lcr & Self.lcrDLAB != 0
            switch offset {
            case Self.RBR_THR:
                if dlab { s.dll = v }
                else if s.mcr & Self.mcrLoopback != 0 { _ = s.rx.push(v) }
                else { out = v }
                if !dlab && s.ier & Self.ierTHRE != 0 { s.thrInterruptPending = true }
            case Self.IER:
                if dlab { s.dlm = v } else {
                    // Enabling THRE interrupts raises one at once: the holding register is empty.
                    if v & Self.ierTHRE != 0 && s.ier & Self.ierTHRE == 0 { s.thrInterruptPending = true }
                    s.ier = v & 0x0F
                }
            case Self.IIR_FCR:
                // "Clear RX FIFO" (bit 1) is ignored: our buffer holds host input queued
                // before the driver initialised the port, and clearing it would lose it.
                s.fifoEnabled = v & 0x01 != 0
            case Self.LCR: s.lcr = v
            case Self.MCR: s.mcr = v & 0x1F
            case Self.SCR: s.scr = v
            default: break
            }
            return s.interruptIdentification != Self.iirNone
        }
        if let out { withUnsafeBytes(of: out) { sink.write($0) } }
        irq?.set(level)
        return .none
    }
}
