// virtio-console (§5.3), one port: receiveq 0, transmitq 1. Once it is up, the shell
// reads and writes here; the 8250 keeps early boot messages and exception reports.
// Output collects in a staging buffer and goes out one chain (one notify at most) per
// line or per wait for input, not per byte. Every receive buffer stays posted except
// the one being read, so host input always finds room. Transmit completions raise no
// interrupts (used_event parked) unless the driver waits for a free buffer.

enum VirtioConsole {
    static var device: VirtioDevice? = nil
    static var rx: Virtqueue? = nil
    static var tx: Virtqueue? = nil
    static var active = false            // the shell's console
    static let wanted = VirtioFeature.version1 | VirtioFeature.eventIdx
    static let queueSize = 16
    static let rxSize: UInt64 = 256, txSize = 1024
    static var rxBuffers: UInt64 = 0     // queueSize x 256 B
    static var txBuffers: UInt64 = 0     // queueSize x 1 KiB, buffer = head
    static var bufferOf: [Int] = []      // rx head -> buffer index (heads get reused)
    static var ready: [(buffer: Int, length: Int)] = []   // received, not yet read
    static var current = -1              // buffer being read
    static var currentLength = 0
    static var position = 0
    static var staged: [UInt8] = []

    static func start(_ d: VirtioDevice) {
        device = d
        if rxBuffers == 0 {
            rxBuffers = Pages.allocate(1)
            txBuffers = Pages.allocate(UInt64(queueSize) * UInt64(txSize) / pageSize)
            bufferOf = [Int](repeating: 0, count: queueSize)
            staged.reserveCapacity(txSize)
        }
        active = rxBuffers != 0 && txBuffers != 0 && setup()
        // Input is collected with its interrupt off while the kernel polls: on again
        // before a halt.
        if active { Idle.register(poll: {}, pending: { false }, arm: { if active { rx?.armInterrupt() } }) }
    }

    /// §3.1.1 with the receive buffers posted before DRIVER_OK (then pvmm routes input here).
    static func setup() -> Bool {
        guard let d = device, d.begin(wanted: wanted) else { return false }
        rx = d.setupQueue(0, maxSize: queueSize, reuse: rx)
        tx = d.setupQueue(1, maxSize: queueSize, reuse: tx)
        guard let rx, tx != nil else { d.fail(); return false }
        ready.removeAll()
        current = -1
        for b in 0..<rx.size { post(b) }
        write16(rx.avail + 2, rx.availIdx)
        d.driverOK()
        rx.kick()
        return true
    }

    private static func post(_ buffer: Int) {
        guard let rx else { return }
        bufferOf[rx.nextHead] = buffer
        _ = rx.add(1) { _ in (rxBuffers + UInt64(buffer) * rxSize, UInt32(rxSize), true) }
    }

    /// Gives up on the device (NEEDS_RESET, nonsense in a ring): back to the 8250, which
    /// pvmm feeds again after a failure.
    static func fallBack() {
        guard active else { return }
        active = false
        device?.reset()
        Console.write("virtio-console: device failed, console back on serial\n")
    }

    static func checkHealth() {
        guard let d = device, let rx, let tx else { return }
        if rx.corrupt || tx.corrupt || (d.takeInterrupts() & 2 != 0 && d.broken) { fallBack() }
    }

    // MARK: output

    /// Called by Console under its lock.
    static func put(_ byte: UInt8) {
        staged.append(byte)
        if byte == 10 || staged.count >= txSize { flush() }
    }

    /// Sends the staged bytes as one chain; waits (at most 1 s) for a free buffer.
    static func flush() {
        guard active, let tx, !staged.isEmpty else { return }
        tx.collect(interrupt: false) { _, _ in }
        if tx.numFree == 0 && !waitTransmit({ tx.numFree > 0 }) {
            let bytes = staged
            staged.removeAll()
            fallBack()
            Console.write(bytes)
            return
        }
        let buffer = txBuffers + UInt64(tx.nextHead) * UInt64(txSize)
        let n = staged.count
        staged.withUnsafeBufferPointer { src in
            UnsafeMutableRawPointer(bitPattern: UInt(buffer))!.copyMemory(from: src.baseAddress!, byteCount: n)
        }
        staged.removeAll(keepingCapacity: true)
        _ = tx.add(1) { _ in (buffer, UInt32(n), false) }
        tx.kick()
    }

    private static func waitTransmit(_ done: () -> Bool) -> Bool {
        guard let tx else { return false }
        return Virtio.wait(timeoutMs: 1000) {
            tx.collect { _, _ in }
            return done() || tx.corrupt
        } && !tx.corrupt
    }

    /// Everything sent and consumed (before power-off: the VMM exits at once).
    static func drain() {
        guard active, let tx else { return }
        flush()
        _ = waitTransmit { tx.numFree == tx.size }
    }

    /// Before an exception report on the 8250: lets queued virtio output go first so
    /// the report comes last. Polls (interrupts are off here), at most 100 ms.
    static func drainPolled() {
        guard active, let tx, !tx.corrupt else { return }
        flush()
        let t0 = rdtsc()
        while tx.numFree < tx.size && !tx.corrupt && rdtsc() &- t0 < Platform.tscKHz * 100 {
            tx.collect(interrupt: false) { _, _ in }
            cpuPause()
        }
    }

    // MARK: input

    static var inputReady: Bool {
        guard let rx else { return false }
        return (current >= 0 && position < currentLength) || !ready.isEmpty || rx.pending
    }

    /// The next input byte, or nil. An emptied buffer is posted again at once.
    static func readByte() -> UInt8? {
        guard let rx else { return nil }
        while true {
            if current >= 0 {
                if position < currentLength {
                    let b = UnsafePointer<UInt8>(bitPattern: UInt(rxBuffers + UInt64(current) * rxSize + UInt64(position)))!.pointee
                    position += 1
                    return b
                }
                post(current)
                current = -1
                rx.kick()
            }
            if ready.isEmpty {
                rx.collect(interrupt: !Virtio.polling) { head, length in ready.append((bufferOf[head], min(Int(length), Int(rxSize)))) }
            }
            guard !ready.isEmpty else {
                checkHealth()
                return nil
            }
            let r = ready.removeFirst()
            current = r.buffer
            currentLength = r.length
            position = 0
        }
    }
}
