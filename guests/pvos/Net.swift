// The pvos network stack on net0 (the first virtio-net device): Ethernet, ARP (ARP.swift),
// IPv4 without fragments, ICMP echo both ways, UDP with an echo service on port 7 and
// the DHCP client (DHCP.swift) on 68. Frames are parsed by NetWire.swift, which checks
// every length and checksum; anything refused bumps a drop counter by reason. Replies
// go straight back to the sender's MAC (no ARP lookup needed to answer).

enum NetMode { case none, fixed, dhcp }

enum NetError: Error {
    case noDevice, unconfigured, noRoute, noBuffer, tooLong, device
}

enum Net {
    static var device: NetDevice? = nil
    static var address: UInt32 = 0
    static var prefix = 0
    static var gateway: UInt32 = 0
    static var mode = NetMode.none
    static var identification: UInt16 = 1
    static var drops = [UInt64](repeating: 0, count: DropReason.count)
    static var udpIn: UInt64 = 0, udpInBytes: UInt64 = 0, udpEchoed: UInt64 = 0
    static var icmpIn: UInt64 = 0, echoAnswered: UInt64 = 0
    static let echoPort: UInt16 = 7
    static let ethIP = EthernetHeader.size, ipPayload = EthernetHeader.size + IPv4.minHeader
    static let udpPayload = ipPayload + UDPHeader.size
    static let poolBuffers = 640   // 256 receive + 256 transmit + ARP queues and spares

    static func drop(_ r: DropReason) { drops[r.rawValue] += 1 }
    static var dropTotal: UInt64 { drops.reduce(0, +) }

    /// From Virtio.initialize: the first virtio-net device becomes net0, configured by
    /// `ip=` from the command line.
    static func attach(_ d: VirtioDevice) {
        guard device == nil else { Console.write("virtio-net: only one device is used; another skipped\n"); return }
        guard PacketPool.initialize(poolBuffers) else { Console.write("net0: out of memory\n"); return }
        let n = NetDevice(d)
        for o in Kernel.options where matches(o.key, "netrxbuf") {
            if let v = parseDecimal(o.value), v >= 128, v <= UInt64(PacketPool.bufferSize) { n.requestedRxSize = Int(v) }
            else { Console.write("net0: bad netrxbuf= (128-2048 bytes)\n") }
        }
        guard n.start() else { Console.write("net0: initialisation failed\n"); return }
        device = n
        Idle.register(poll: { poll() }, pending: { device?.pending ?? false }, arm: { device?.armInterrupt() })
        for o in Kernel.options where matches(o.key, "ip") { configure(o.value) }
    }

    static func configure(_ value: [UInt8]) {
        switch IPv4.parseConfig(value) {
        case .success(.dhcp):
            mode = .dhcp
            DHCP.start()
        case .success(.fixed(let a, let p, let g)):
            set(address: a, prefix: p, gateway: g ?? 0)
            mode = .fixed
        case .failure(let e):
            Console.write("net0: bad ip= (")
            switch e {
            case .address: Console.write("address")
            case .prefix: Console.write("prefix")
            case .gateway: Console.write("gateway")
            }
            Console.write("); expected ip=ADDR/PREFIX[,GATEWAY] or ip=dhcp\n")
        }
    }

    static func set(address a: UInt32, prefix p: Int, gateway g: UInt32) {
        address = a
        prefix = p
        gateway = g
        ARP.flush()
    }

    static var mask: UInt32 { IPv4.mask(prefix) }
    static var subnetBroadcast: UInt32 { address | ~mask }

    static func poll() {
        device?.receive { p, n, trusted, segment in input(p, n, trusted, segment: segment) }
    }

    // MARK: receive

    /// `segment` > 0: a UDP segmentation frame (GUEST_USO) of datagrams of that size.
    static func input(_ p: UnsafeMutableRawPointer, _ n: Int, _ trusted: Bool, segment: Int = 0) {
        guard let d = device else { return }
        let eth: EthernetHeader
        switch EthernetHeader.parse(p, n, limit: segment > 0 ? EthernetHeader.maxSegmentedFrame : EthernetHeader.maxFrame) {
        case .success(let h): eth = h
        case .failure(let r): drop(r); return
        }
        guard eth.destination == d.mac || eth.destination == EthernetHeader.broadcast else { drop(.notForUs); return }
        let l3 = p.advanced(by: ethIP)
        if eth.type == EtherType.arp { guard segment == 0 else { drop(.badVirtioHeader); return }; ARP.input(l3, n - ethIP); return }
        let ip: IPv4
        switch IPv4.parse(l3, n - ethIP) {
        case .success(let h): ip = h
        case .failure(let r): drop(r); return
        }
        let l4 = l3.advanced(by: ip.headerLength)
        let l4Length = ip.totalLength - ip.headerLength
        let unicast = address != 0 && ip.destination == address
        let broadcast = ip.destination == 0xFFFF_FFFF || (address != 0 && prefix < 31 && ip.destination == subnetBroadcast)
        if segment > 0 && ip.proto != IPProtocol.udp { drop(.badVirtioHeader); return }
        switch ip.proto {
        case IPProtocol.icmp where unicast:
            icmp(ip, eth, l4, l4Length)
        case IPProtocol.udp where unicast || broadcast || mode == .dhcp:
            // Before DHCP is bound, an offer may be unicast to the address it offers.
            udp(ip, eth, l4, l4Length, trusted, unicast: unicast, segment: segment)
        default:
            drop(.notForUs)
        }
    }

    static func icmp(_ ip: IPv4, _ eth: EthernetHeader, _ p: UnsafeMutableRawPointer, _ n: Int) {
        guard let echo = ICMPEcho.parse(p, n) else { drop(.icmp); return }
        icmpIn += 1
        if echo.type == ICMPEcho.reply { Ping.received(echo, from: ip.source); return }
        guard n <= EthernetHeader.maxFrame - ipPayload, let b = PacketPool.take() else { drop(.noBuffer); return }
        let f = frame(b)
        let payload = n - ICMPEcho.headerSize
        f.advanced(by: ipPayload + ICMPEcho.headerSize).copyMemory(from: p.advanced(by: ICMPEcho.headerSize), byteCount: payload)
        ICMPEcho.write(f.advanced(by: ipPayload), type: ICMPEcho.reply, identifier: echo.identifier, sequence: echo.sequence, payload: payload)
        if (try? sendIPv4(b, to: ip.source, proto: IPProtocol.icmp, payload: n, csum: nil, mac: eth.source)) != nil {
            echoAnswered += 1
        }
    }

    static func udp(_ ip: IPv4, _ eth: EthernetHeader, _ p: UnsafeMutableRawPointer, _ n: Int, _ trusted: Bool, unicast: Bool,
                    segment: Int = 0) {
        let u: UDPHeader
        switch UDPHeader.parse(p, n, source: ip.source, destination: ip.destination, checked: !trusted) {
        case .success(let h): u = h
        case .failure(let r): drop(r); return
        }
        // A segmentation frame is the datagrams the sender wrote, `segment` bytes each
        // (the last one shorter): each is handled as if it had come alone.
        let total = u.length - UDPHeader.size
        let step = segment > 0 ? segment : max(total, 1)
        var offset = 0
        repeat {
            datagram(ip, eth, u, p.advanced(by: UDPHeader.size + offset), min(step, total - offset), unicast: unicast)
            offset += step
        } while offset < total
    }

    static func datagram(_ ip: IPv4, _ eth: EthernetHeader, _ u: UDPHeader, _ data: UnsafeMutableRawPointer, _ count: Int,
                         unicast: Bool) {
        udpIn += 1
        udpInBytes += UInt64(count)
        switch u.destinationPort {
        case DHCPMessage.clientPort where mode == .dhcp:
            DHCP.input(data, count)
        case echoPort where unicast:
            // RFC 862: the same bytes back to where they came from.
            if (try? sendUDP(to: ip.source, port: u.sourcePort, from: echoPort, count: count, mac: eth.source, { d in
                d.copyMemory(from: data, byteCount: count)
            })) != nil { udpEchoed += 1 }
        default:
            drop(.noPort)
        }
    }

    // MARK: send

    /// The frame's first byte in pool buffer `b` (after the virtio-net header room).
    static func frame(_ b: Int) -> UnsafeMutableRawPointer { PacketPool.pointer(b).advanced(by: VirtioNetHeader.size) }

    /// Sends `count` bytes (written by `fill` at the UDP payload) from port `from`.
    /// The checksum is the device's when it offers CSUM, else computed here.
    static func sendUDP(to dst: UInt32, port: UInt16, from: UInt16, count: Int, mac: UInt64? = nil,
                        source: UInt32? = nil, _ fill: (UnsafeMutableRawPointer) -> Void) throws(NetError) {
        guard let d = device else { throw .noDevice }
        guard count <= EthernetHeader.maxFrame - udpPayload else { throw .tooLong }
        guard let b = PacketPool.take() else { drop(.noBuffer); throw .noBuffer }
        let f = frame(b)
        fill(f.advanced(by: udpPayload))
        let offload = d.offloadsTransmitChecksum
        UDPHeader.write(f.advanced(by: ipPayload), sourcePort: from, destinationPort: port, payload: count,
                        source: source ?? address, destination: dst, offload: offload)
        try sendIPv4(b, to: dst, proto: IPProtocol.udp, payload: UDPHeader.size + count,
                     csum: offload ? (ipPayload, 6) : nil, mac: mac, source: source)
    }

    /// `segments` datagrams of `segment` bytes each from the `segments * segment` bytes at
    /// guest address `payload`, to `mac`, in one UDP segmentation frame (the device must
    /// `segmentsUDP`; the payload stays unchanged until the frame is reclaimed).
    static func sendUDPSegmented(to dst: UInt32, port: UInt16, from: UInt16, segment: Int, segments: Int,
                                 payload: UInt64, mac: UInt64) throws(NetError) {
        guard let d = device else { throw .noDevice }
        let total = segment * segments
        guard d.segmentsUDP, address != 0, segment >= 1, IPv4.minHeader + UDPHeader.size + segment <= d.mtu,
              udpPayload + total <= 65536, IPv4.minHeader + UDPHeader.size + total <= 0xFFFF else { throw .tooLong }
        guard let b = PacketPool.take() else { drop(.noBuffer); throw .noBuffer }
        let f = frame(b)
        // The UDP length and checksum cover the whole payload: the host rewrites both per
        // datagram from them (as for Linux's UDP_SEGMENT).
        UDPHeader.write(f.advanced(by: ipPayload), sourcePort: from, destinationPort: port, payload: total,
                        source: address, destination: dst, offload: true)
        identification &+= 1
        IPv4.write(f.advanced(by: ethIP), source: address, destination: dst, proto: IPProtocol.udp,
                   payloadLength: UDPHeader.size + total, identification: identification)
        EthernetHeader.write(f, destination: mac, source: d.mac, type: EtherType.ipv4)
        guard d.transmitSegmented(b, headerLength: udpPayload, payload: payload, payloadLength: total, segment: segment,
                                  csum: (ipPayload, 6)) else { throw .device }
    }

    /// Adds the IPv4 and Ethernet headers around `payload` bytes already in place and
    /// sends: broadcast, to `mac` if given, else through ARP for the next hop (on-link
    /// destination or the gateway). Takes ownership of `b`.
    static func sendIPv4(_ b: Int, to dst: UInt32, proto: UInt8, payload: Int, csum: (start: Int, offset: Int)?,
                         mac: UInt64? = nil, source: UInt32? = nil) throws(NetError) {
        guard let d = device else { PacketPool.release(b); throw .noDevice }
        guard IPv4.minHeader + payload <= d.mtu else { PacketPool.release(b); throw .tooLong }   // the device's MTU (§5.1.4.1)
        let src = source ?? address
        guard src != 0 || dst == 0xFFFF_FFFF else { PacketPool.release(b); throw .unconfigured }
        let f = frame(b)
        identification &+= 1
        IPv4.write(f.advanced(by: ethIP), source: src, destination: dst, proto: proto, payloadLength: payload,
                   identification: identification)
        // No padding to Ethernet's 60 bytes: virtio devices and taps do not need it (as
        // Linux's virtio_net), and some passt versions drop frames longer than their IP packet.
        let length = ipPayload + payload
        if dst == 0xFFFF_FFFF || (address != 0 && prefix < 31 && dst == subnetBroadcast) {
            try transmit(b, length, csum: csum, to: EthernetHeader.broadcast)
            return
        }
        if let mac { try transmit(b, length, csum: csum, to: mac); return }
        guard let hop = nextHop(dst) else { PacketPool.release(b); throw .noRoute }
        EthernetHeader.write(f, destination: 0, source: d.mac, type: EtherType.ipv4)
        ARP.send(b, length, csum: csum, via: hop)
    }

    /// Where a frame for `dst` goes: `dst` itself on the subnet, else the gateway.
    static func nextHop(_ dst: UInt32) -> UInt32? {
        if dst & mask == address & mask { return dst }
        return gateway != 0 ? gateway : nil
    }

    static func transmit(_ b: Int, _ length: Int, csum: (start: Int, offset: Int)?, to mac: UInt64, type: UInt16 = EtherType.ipv4) throws(NetError) {
        guard let d = device else { PacketPool.release(b); throw .noDevice }
        EthernetHeader.write(frame(b), destination: mac, source: d.mac, type: type)
        guard d.transmit(b, length, csum: csum) else { throw .device }
    }
}
