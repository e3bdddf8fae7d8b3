// libFuzzer harness for pvos's network parsers (guests/pvos/wire/NetWire.swift, compiled
// into this module): the input is one received buffer, virtio-net header first, walked
// down the same path the guest takes (header, Ethernet, ARP or IPv4, ICMP/UDP, DHCP).
// Parsers must never read out of bounds (ASan) and what they accept must be consistent
// with the buffer (the preconditions below).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    // An exact-size heap copy, so ASan sees a read one past the end.
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 1)
    defer { buffer.deallocate() }
    buffer.copyMemory(from: data, byteCount: size)
    walk(buffer, size)
    _ = IPv4.parseConfig(Array(UnsafeRawBufferPointer(start: buffer, count: min(size, 64))))
    return 0
}

func walk(_ p: UnsafeMutableRawPointer, _ n: Int) {
    // Both ways: a driver that takes UDP segmentation frames, and one that does not.
    guard let h = VirtioNetHeader.parse(p, n, udpSegments: true) else { return }
    if VirtioNetHeader.parse(p, n) == nil { precondition(h.segment > 0, "refused without segments: \(h.gsoType)") }
    let trusted = h.flags != 0
    let f = p.advanced(by: VirtioNetHeader.size)
    let count = n - VirtioNetHeader.size
    guard case .success(let eth) = EthernetHeader.parse(f, count, limit: h.segment > 0 ? EthernetHeader.maxSegmentedFrame : EthernetHeader.maxFrame) else { return }
    let l3 = f.advanced(by: EthernetHeader.size)
    let l3Count = count - EthernetHeader.size
    if eth.type == EtherType.arp {
        if let a = ARPPacket.parse(l3, l3Count) { precondition(l3Count >= ARPPacket.size && a.senderMAC != 0) }
        return
    }
    guard case .success(let ip) = IPv4.parse(l3, l3Count) else { return }
    precondition(ip.headerLength >= 20 && ip.headerLength <= ip.totalLength && ip.totalLength <= l3Count)
    let l4 = l3.advanced(by: ip.headerLength)
    let l4Count = ip.totalLength - ip.headerLength
    if ip.proto == IPProtocol.icmp {
        _ = ICMPEcho.parse(l4, l4Count)
        return
    }
    guard ip.proto == IPProtocol.udp,
          case .success(let u) = UDPHeader.parse(l4, l4Count, source: ip.source, destination: ip.destination, checked: !trusted)
    else { return }
    precondition(u.length >= UDPHeader.size && u.length <= l4Count)
    let d = l4.advanced(by: UDPHeader.size)
    let dCount = u.length - UDPHeader.size
    // The MAC and transaction the client expects are taken from the message itself, so
    // the fuzzer reaches the option walk.
    guard dCount >= 34 else { return }
    if let m = DHCPMessage.parse(d, dCount, mac: Wire.mac(d, 28), transaction: Wire.be32(d, 4)) {
        precondition(m.type == DHCPMessage.offer || m.type == DHCPMessage.ack || m.type == DHCPMessage.nak)
    }
}
