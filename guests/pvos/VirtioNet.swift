// virtio-net (virtio 1.2 §5.1): receiveq 0 and transmitq 1, one pair. Every buffer is a
// 2 KiB PacketPool buffer: the 12-byte virtio_net_hdr (VERSION_1) then the frame, one
// descriptor each. All receive buffers stay posted; an interrupt (used_event = last
// seen) wakes the idle CPU when frames arrive. Transmit completions raise none
// (used_event parked half the index space away) and are reclaimed when sending, unless
// the ring is full. A device that breaks the ring rules, or sets DEVICE_NEEDS_RESET,
// is reset and re-initialised; its buffers go back to the pool first.

@_extern(c, "pvos_read8") func read8(_ address: UInt64) -> UInt8

enum NetFeature {
    static let csum: UInt64 = 1 << 0, guestCsum: UInt64 = 1 << 1, mtu: UInt64 = 1 << 3
    static let mac: UInt64 = 1 << 5, mrgRxbuf: UInt64 = 1 << 15, status: UInt64 = 1 << 16
    static let guestUSO4: UInt64 = 1 << 54, guestUSO6: UInt64 = 1 << 55, hostUSO: UInt64 = 1 << 56
    /// What receiving UDP segmentation frames takes: pvmm offers the two together.
    static let guestUSO = guestCsum | mrgRxbuf | guestUSO4 | guestUSO6
}

/// Per-device counters (`net`).
struct NetCounters {
    var rxPackets: UInt64 = 0, rxBytes: UInt64 = 0, txPackets: UInt64 = 0, txBytes: UInt64 = 0
    var txDropped: UInt64 = 0, resets: UInt64 = 0, interrupts: UInt64 = 0
    var rxMerged: UInt64 = 0        // frames the device spread over several buffers
    var rxSegmented: UInt64 = 0     // UDP segmentation frames (many datagrams each)
}

final class NetDevice {
    static let wanted = VirtioFeature.version1 | VirtioFeature.eventIdx | NetFeature.csum | NetFeature.guestCsum
        | NetFeature.mtu | NetFeature.mac | NetFeature.mrgRxbuf | NetFeature.status | NetFeature.hostUSO
        | NetFeature.guestUSO4 | NetFeature.guestUSO6
    static let queueSize = 256
    static let configMAC: UInt64 = 0, configStatus: UInt64 = 6, configMTU: UInt64 = 10
    static let configGeneration: UInt64 = 0x0FC

    let device: VirtioDevice
    var rx: Virtqueue? = nil
    var tx: Virtqueue? = nil
    var rxBuffer: [Int32] = []      // head -> pool buffer (-1: none)
    var txBuffer: [Int32] = []
    var mac: UInt64 = 0
    var mtu = 1500
    var linkUp = true
    var up = false                  // initialised and not failed
    var counters = NetCounters()
    var lastHealthCheck: UInt64 = 0
    var batch: [(buffer: Int, length: UInt32)] = []
    /// Gathers a frame the device spread over buffers: 68 KiB, room for a UDP
    /// segmentation frame (0: none could be allocated; merged frames are then dropped).
    var mergeArea: UInt64 = 0
    static let mergeCapacity = 17 * Int(pageSize)
    var mergeSegment = 0
    /// Bytes of each receive buffer offered to the device: the whole pool buffer, or less
    /// (`netrxbuf=` on the command line, with MRG_RXBUF only) so that frames span several.
    var rxPostSize = PacketPool.bufferSize
    var requestedRxSize = PacketPool.bufferSize
    var mergeRemaining = 0
    var mergeLength = 0
    var mergeTrusted = false
    var mergeBad = false

    init(_ device: VirtioDevice) { self.device = device }

    var offloadsTransmitChecksum: Bool { device.features & NetFeature.csum != 0 }
    var mergeable: Bool { device.features & NetFeature.mrgRxbuf != 0 }
    /// UDP segmentation offload (HOST_USO with CSUM): `transmitSegmented` may be used.
    /// The device may hand over UDP segmentation frames (GUEST_USO4/6).
    var receivesSegments: Bool { device.features & NetFeature.guestUSO == NetFeature.guestUSO }
    var segmentsUDP: Bool { device.features & (NetFeature.csum | NetFeature.hostUSO) == NetFeature.csum | NetFeature.hostUSO }

    /// §5.1.5 with §3.1.1: negotiate, both queues, MAC/STATUS/MTU from config, every
    /// receive buffer posted before DRIVER_OK. Also the recovery after a reset.
    func start() -> Bool {
        up = false
        releaseBuffers()
        guard device.begin(wanted: NetDevice.wanted) else { return false }
        rx = device.setupQueue(0, maxSize: NetDevice.queueSize, reuse: rx)
        tx = device.setupQueue(1, maxSize: NetDevice.queueSize, reuse: tx)
        guard let rx, let tx else { device.fail(); return false }
        if rxBuffer.count != rx.size { rxBuffer = [Int32](repeating: -1, count: rx.size) }
        if txBuffer.count != tx.size { txBuffer = [Int32](repeating: -1, count: tx.size) }
        if mergeArea == 0 { mergeArea = Pages.allocate(UInt64(NetDevice.mergeCapacity) / pageSize) }
        readConfig()
        rxPostSize = mergeable ? requestedRxSize : PacketPool.bufferSize
        mergeRemaining = 0
        while rx.numFree > 0, let b = PacketPool.take() { post(b) }
        device.driverOK()
        rx.kick()
        // used_event is 0 (cleared rings): the first used buffer interrupts. Frames the
        // device delivers from now on are taken by `receive`, never discarded here.
        tx.collect(interrupt: false) { _, _ in }
        lastHealthCheck = rdtsc()
        up = true
        return true
    }

    /// Config fields in one generation (§4.2.2.2: re-read if it changed meanwhile).
    func readConfig() {
        let c = device.base + VirtioReg.config
        for _ in 0..<4 {
            let g = read32(device.base + NetDevice.configGeneration)
            if device.features & NetFeature.mac != 0 {
                var m: UInt64 = 0
                for i in 0..<6 { m = m << 8 | UInt64(read8(c + NetDevice.configMAC + UInt64(i))) }
                mac = m
            }
            linkUp = device.features & NetFeature.status == 0 || read16(c + NetDevice.configStatus) & 1 != 0
            if device.features & NetFeature.mtu != 0 {
                let m = Int(read16(c + NetDevice.configMTU))
                mtu = m >= 576 && m <= 1500 ? m : 1500   // larger frames do not fit a buffer
            }
            if read32(device.base + NetDevice.configGeneration) == g { break }
        }
        if mac == 0 || mac >> 40 & 1 != 0 {
            // No (usable) MAC from the device: a locally administered one.
            mac = 0x0200_0000_0000 | (rdtsc() & 0xFF_FFFF_FFFF)
        }
    }

    /// Every buffer attached to a head goes back to the pool (before a reset re-posts).
    func releaseBuffers() {
        for i in rxBuffer.indices where rxBuffer[i] >= 0 { PacketPool.release(Int(rxBuffer[i])); rxBuffer[i] = -1 }
        for i in txBuffer.indices where txBuffer[i] >= 0 { PacketPool.release(Int(txBuffer[i])); txBuffer[i] = -1 }
    }

    private func post(_ b: Int) {
        guard let rx else { PacketPool.release(b); return }
        let head = rx.nextHead
        guard rx.add(1, { _ in (PacketPool.address(b), UInt32(rxPostSize), true) }) != nil else {
            PacketPool.release(b)
            return
        }
        rxBuffer[head] = Int32(b)
    }

    /// Cheap (no exits): the device returned receive buffers, or an interrupt is pending.
    var pending: Bool {
        guard up, let rx else { return false }
        return rx.pending || device.interruptPending
    }

    /// Before the CPU halts: the receive interrupt again (`receive` leaves it off while
    /// the kernel polls, Idle.haltPoll).
    func armInterrupt() {
        guard up, let rx else { return }
        rx.armInterrupt()
    }

    /// Takes every received frame: `deliver(frame, length, checksumTrusted, segment)`
    /// (segment: the datagram size of a UDP segmentation frame, else 0), then posts
    /// the buffers again with one kick. Returns the number of frames delivered.
    @discardableResult
    func receive(_ deliver: (UnsafeMutableRawPointer, Int, Bool, Int) -> Void) -> Int {
        checkHealth()
        guard up, let rx else { return 0 }
        var delivered = 0
        // Frames that came while a batch was handled are taken too (up to 4 rounds)
        // before sleeping: under load that saves an interrupt per frame.
        for _ in 0..<4 {
            // Heads are mapped to their buffers while collecting: posting a buffer again
            // reuses a freed head, possibly one later in this batch.
            batch.removeAll(keepingCapacity: true)
            rx.collect(interrupt: !Virtio.polling) { head, length in
                batch.append((Int(rxBuffer[head]), length))
                rxBuffer[head] = -1
            }
            for (b, length) in batch where b >= 0 {
                delivered += consume(b, Int(length), deliver)
                post(b)
            }
            if !batch.isEmpty { rx.kick() }
            if rx.corrupt { recover(); break }
            if batch.isEmpty || !rx.pending { break }
        }
        return delivered
    }

    /// One used receive buffer: a whole frame, or a piece of a merged one (§5.1.6.4).
    private func consume(_ b: Int, _ length: Int, _ deliver: (UnsafeMutableRawPointer, Int, Bool, Int) -> Void) -> Int {
        let p = PacketPool.pointer(b)
        let used = min(length, rxPostSize)   // a used.len beyond the buffer is a lie
        if mergeRemaining > 0 {
            if length > rxPostSize || mergeLength + used > NetDevice.mergeCapacity { mergeBad = true }
            else { merged.advanced(by: mergeLength).copyMemory(from: p, byteCount: used) }
            mergeLength += used
            mergeRemaining -= 1
            guard mergeRemaining == 0 else { return 0 }
            if mergeBad { Net.drop(.oversize); return 0 }
            counters.rxMerged += 1
            return frame(merged, mergeLength, mergeTrusted, mergeSegment, deliver)
        }
        guard length <= rxPostSize, let h = VirtioNetHeader.parse(p, length, udpSegments: receivesSegments) else {
            Net.drop(.badVirtioHeader)
            return 0
        }
        // NEEDS_CSUM: the sender left the checksum partial (same-host traffic); DATA_VALID:
        // the device checked it. Either way there is nothing to verify (§5.1.6.4.1).
        let trusted = device.features & NetFeature.guestCsum != 0 && h.flags != 0
        let frameBytes = length - VirtioNetHeader.size
        let count = mergeable ? Int(h.numBuffers) : 1
        guard count >= 1 && count <= NetDevice.queueSize else { Net.drop(.badVirtioHeader); return 0 }
        if count == 1 { return frame(p.advanced(by: VirtioNetHeader.size), frameBytes, trusted, h.segment, deliver) }
        guard mergeArea != 0 else { Net.drop(.noBuffer); mergeRemaining = count - 1; mergeBad = true; return 0 }
        merged.copyMemory(from: p.advanced(by: VirtioNetHeader.size), byteCount: frameBytes)
        mergeLength = frameBytes
        mergeRemaining = count - 1
        mergeTrusted = trusted
        mergeSegment = h.segment
        mergeBad = false
        return 0
    }

    private var merged: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(mergeArea))! }

    private func frame(_ p: UnsafeMutableRawPointer, _ n: Int, _ trusted: Bool, _ segment: Int,
                       _ deliver: (UnsafeMutableRawPointer, Int, Bool, Int) -> Void) -> Int {
        counters.rxPackets += 1
        counters.rxBytes += UInt64(n)
        if segment > 0 { counters.rxSegmented += 1 }
        deliver(p, n, trusted, segment)
        return 1
    }

    /// Returns completed transmit buffers to the pool; asks for an interrupt at the next
    /// completion only when `interrupt` (someone waits for room).
    func reclaim(interrupt: Bool = false) {
        guard let tx else { return }
        tx.collect(interrupt: interrupt) { head, _ in
            let b = Int(txBuffer[head])
            txBuffer[head] = -1
            if b >= 0 { PacketPool.release(b) }
        }
    }

    /// Sends pool buffer `b` holding a frame of `length` bytes after the header room.
    /// `csum`: where the L4 checksum starts and sits, if the device completes it (the
    /// caller then stored only the pseudo-header sum). Takes ownership of `b`.
    @discardableResult
    func transmit(_ b: Int, _ length: Int, csum: (start: Int, offset: Int)?) -> Bool {
        guard up, length >= EthernetHeader.size, length <= EthernetHeader.maxFrame, room(1), let tx else {
            return dropped(b)
        }
        VirtioNetHeader.write(PacketPool.pointer(b), csum: offloadsTransmitChecksum ? csum : nil)
        let head = tx.nextHead
        guard tx.add(1, { _ in (PacketPool.address(b), UInt32(VirtioNetHeader.size + length), false) }) != nil else {
            return dropped(b)
        }
        return sent(b, head, length)
    }

    /// One UDP segmentation frame (`segmentsUDP`): pool buffer `b` holds `headerLength`
    /// bytes of Ethernet, IPv4 and UDP headers (the UDP checksum field with the pseudo
    /// header sum of the whole payload), `payloadLength` bytes at guest address `payload`
    /// follow in a second descriptor, and the device sends them as datagrams of `segment`
    /// bytes each. `payload` must stay unchanged until the chain is reclaimed.
    @discardableResult
    func transmitSegmented(_ b: Int, headerLength: Int, payload: UInt64, payloadLength: Int, segment: Int,
                           csum: (start: Int, offset: Int)) -> Bool {
        guard up, segmentsUDP, headerLength + payloadLength <= 65536, room(2), let tx else { return dropped(b) }
        VirtioNetHeader.write(PacketPool.pointer(b), csum: csum, udpSegments: (headerLength, segment))
        let head = tx.nextHead
        guard tx.add(2, { k in
            k == 0 ? (PacketPool.address(b), UInt32(VirtioNetHeader.size + headerLength), false)
                   : (payload, UInt32(payloadLength), false)
        }) != nil else { return dropped(b) }
        return sent(b, head, headerLength + payloadLength)
    }

    private func dropped(_ b: Int) -> Bool {
        PacketPool.release(b)
        counters.txDropped += 1
        return false
    }

    private func sent(_ b: Int, _ head: Int, _ length: Int) -> Bool {
        guard let tx else { return false }
        txBuffer[head] = Int32(b)
        counters.txPackets += 1
        counters.txBytes += UInt64(length)
        tx.kick()
        return true
    }

    /// Room for a chain of `descriptors` after reclaiming; when the ring is full it waits
    /// (interrupt armed, ≤ 1 s) for the device, and a stall resets it.
    private func room(_ descriptors: Int) -> Bool {
        guard let tx else { return false }
        reclaim()
        if tx.numFree >= descriptors { return true }
        let t0 = rdtsc()
        while tx.numFree < descriptors && !tx.corrupt && rdtsc() &- t0 < Platform.tscKHz * 1000 {
            reclaim(interrupt: true)
            if tx.numFree < descriptors {
                Platform.idle(SMP.bsp, until: t0 &+ Platform.tscKHz * 1000) { tx.pending || device.interruptPending }
            }
            _ = device.takeInterrupts()
        }
        if tx.numFree >= descriptors { return true }
        recover()
        return false
    }

    /// Link changes and DEVICE_NEEDS_RESET: on a config interrupt (QEMU), else (pvmm's
    /// interrupts carry no cause) when an interrupt came with nothing used, or once a
    /// second: one Status read each time.
    func checkHealth() {
        guard let rx, let tx else { return }
        let causes = device.takeInterrupts()
        if causes != 0 { counters.interrupts += 1 }
        let now = rdtsc()
        let periodic = now &- lastHealthCheck > Platform.tscKHz * 1000
        if rx.corrupt || tx.corrupt || causes & 2 != 0 || periodic || (causes != 0 && !rx.pending && Platform.underPVMM) {
            lastHealthCheck = now
            if !up { return }
            if rx.corrupt || tx.corrupt || device.broken { recover(); return }
            if causes & 2 != 0 || periodic { linkUp = device.features & NetFeature.status == 0 || read16(device.base + VirtioReg.config + NetDevice.configStatus) & 1 != 0 }
        }
    }

    /// Reset and re-initialise (§2.1.2: DEVICE_NEEDS_RESET), counted.
    func recover() {
        counters.resets += 1
        Console.write("net0: device failure, reset\n")
        device.reset()
        if !start() { Console.write("net0: re-initialisation failed\n") }
    }
}
