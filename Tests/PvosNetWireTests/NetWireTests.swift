import PvosNetWire
import Testing

/// pvos's network parsers and builders (guests/pvos/NetWire.swift), compiled for the host.
/// Frames are built here byte by byte, independently of the builders under test.

func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeMutableRawPointer, Int) -> R) -> R {
    var copy = bytes
    return copy.withUnsafeMutableBytes { body($0.baseAddress!, $0.count) }
}

/// RFC 1071 reference: big-endian 16-bit words, end-around carry, complemented.
func referenceChecksum(_ b: [UInt8], initial: UInt32 = 0) -> UInt16 {
    var s = initial
    var i = 0
    while i + 1 < b.count { s += UInt32(b[i]) << 8 | UInt32(b[i + 1]); i += 2 }
    if i < b.count { s += UInt32(b[i]) << 8 }
    while s >> 16 != 0 { s = (s & 0xFFFF) + (s >> 16) }
    return ~UInt16(s)
}

func ipv4Header(total: Int, proto: UInt8, src: [UInt8], dst: [UInt8], flags: UInt16 = 0x4000) -> [UInt8] {
    var h: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, UInt8(flags >> 8), UInt8(flags & 0xFF),
                      64, proto, 0, 0] + src + dst
    let c = referenceChecksum(h)
    h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xFF)
    return h
}

@Suite struct ChecksumTests {
    @Test(arguments: [0, 1, 2, 3, 7, 8, 9, 20, 63, 1400, 1501])
    func matchesReference(length: Int) {
        var g: UInt32 = 0x1234_5678
        let bytes = (0..<length).map { _ -> UInt8 in g = g &* 1_103_515_245 &+ 12345; return UInt8(truncatingIfNeeded: g >> 16) }
        let ours = withBytes(bytes) { p, n in Checksum.finish(Checksum.sum(p, n)) }
        #expect(ours == referenceChecksum(bytes))
    }

    @Test func rfc1071Example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let s = withBytes([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]) { p, n in Checksum.fold(Checksum.sum(p, n)) }
        #expect(s == 0xDDF2)
    }
}

@Suite struct FrameTests {
    @Test func ethernetBounds() {
        let frame: [UInt8] = [1, 2, 3, 4, 5, 6, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF, 0x08, 0x00]
        let h = withBytes(frame) { EthernetHeader.parse($0, $1) }
        guard case .success(let e) = h else { Issue.record("refused"); return }
        #expect(e.destination == 0x0102_0304_0506 && e.source == 0x0A0B_0C0D_0E0F && e.type == 0x0800)
        #expect(withBytes(Array(frame[0..<13])) { EthernetHeader.parse($0, $1) } == .failure(.runt))
        #expect(withBytes(frame + [UInt8](repeating: 0, count: 1501)) { EthernetHeader.parse($0, $1) } == .failure(.oversize))
        var v6 = frame; v6[12] = 0x86; v6[13] = 0xDD
        #expect(withBytes(v6) { EthernetHeader.parse($0, $1) } == .failure(.etherType))
    }

    @Test func virtioHeader() {
        let h = withBytes([1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 2, 0]) { VirtioNetHeader.parse($0, $1) }
        #expect(h?.flags == 1 && h?.csumStart == 34 && h?.csumOffset == 6 && h?.numBuffers == 2)
        #expect(withBytes([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]) { VirtioNetHeader.parse($0, $1) } == nil)   // GSO
        #expect(withBytes([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]) { VirtioNetHeader.parse($0, $1) } == nil)
        #expect(withBytes([0, 0, 0]) { VirtioNetHeader.parse($0, $1) } == nil)
        // UDP_L4 only when the driver takes segmentation frames, with a size and a
        // partial or checked checksum.
        let uso: [UInt8] = [1, 5, 42, 0, 0x78, 0x05, 34, 0, 6, 0, 1, 0]
        #expect(withBytes(uso) { VirtioNetHeader.parse($0, $1) } == nil)
        let s = withBytes(uso) { VirtioNetHeader.parse($0, $1, udpSegments: true) }
        #expect(s?.segment == 1400 && s?.flags == 1)
        var noSize = uso; noSize[4] = 0; noSize[5] = 0
        #expect(withBytes(noSize) { VirtioNetHeader.parse($0, $1, udpSegments: true) } == nil)
        var noCsum = uso; noCsum[0] = 0
        #expect(withBytes(noCsum) { VirtioNetHeader.parse($0, $1, udpSegments: true) } == nil)
        var tcp = uso; tcp[1] = 1
        #expect(withBytes(tcp) { VirtioNetHeader.parse($0, $1, udpSegments: true) } == nil)
        #expect(withBytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]) { VirtioNetHeader.parse($0, $1, udpSegments: true) }?.segment == 0)
    }

    @Test func arpRequest() {
        let arp: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]
        let a = withBytes(arp) { ARPPacket.parse($0, $1) }
        #expect(a?.operation == 1 && a?.senderMAC == 0x0200_0000_0001 && a?.senderIP == 0x0A00_0001 && a?.targetIP == 0x0A00_0002)
        // Round trip through the builder.
        let again = withBytes([UInt8](repeating: 0, count: 28)) { p, n -> ARPPacket? in a!.write(p); return ARPPacket.parse(p, n) }
        #expect(again?.senderIP == a?.senderIP && again?.targetMAC == a?.targetMAC)
        var multicastSender = arp; multicastSender[8] = 1
        #expect(withBytes(multicastSender) { ARPPacket.parse($0, $1) } == nil)
        var badOp = arp; badOp[7] = 9
        #expect(withBytes(badOp) { ARPPacket.parse($0, $1) } == nil)
        #expect(withBytes(Array(arp[0..<27])) { ARPPacket.parse($0, $1) } == nil)
    }

    @Test func ipv4Validation() {
        let h = ipv4Header(total: 28, proto: 17, src: [10, 0, 0, 1], dst: [10, 0, 0, 2]) + [UInt8](repeating: 0, count: 8)
        guard case .success(let ip) = withBytes(h, { IPv4.parse($0, $1) }) else { Issue.record("refused"); return }
        #expect(ip.headerLength == 20 && ip.totalLength == 28 && ip.proto == 17 && ip.source == 0x0A00_0001)
        var bad = h; bad[11] ^= 1
        #expect(withBytes(bad) { IPv4.parse($0, $1) } == .failure(.ipChecksum))
        #expect(withBytes(Array(h[0..<27])) { IPv4.parse($0, $1) } == .failure(.ipHeader))   // total > frame
        let fragment = ipv4Header(total: 28, proto: 17, src: [10, 0, 0, 1], dst: [10, 0, 0, 2], flags: 0x2000) + [UInt8](repeating: 0, count: 8)
        #expect(withBytes(fragment) { IPv4.parse($0, $1) } == .failure(.ipFragment))
        let broadcastSource = ipv4Header(total: 28, proto: 17, src: [255, 255, 255, 255], dst: [10, 0, 0, 2]) + [UInt8](repeating: 0, count: 8)
        #expect(withBytes(broadcastSource) { IPv4.parse($0, $1) } == .failure(.ipHeader))
        var ihl = h; ihl[0] = 0x4F    // IHL 60 > 36 bytes
        #expect(withBytes(ihl) { IPv4.parse($0, $1) } == .failure(.ipHeader))
        // The builder's header parses back.
        let built = withBytes([UInt8](repeating: 0, count: 28)) { p, n -> Bool in
            IPv4.write(p, source: 0x0A00_0002, destination: 0x0A00_0001, proto: 1, payloadLength: 8, identification: 7)
            if case .success(let b) = IPv4.parse(p, n) { return b.totalLength == 28 && b.destination == 0x0A00_0001 }
            return false
        }
        #expect(built)
    }

    @Test func udpChecksums() {
        let src: UInt32 = 0x0A00_0001, dst: UInt32 = 0x0A00_0002
        let payload: [UInt8] = Array("hello".utf8)
        var udp: [UInt8] = [0x30, 0x39, 0, 7, 0, UInt8(8 + payload.count), 0, 0] + payload
        let pseudo: [UInt8] = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, UInt8(udp.count)]
        let c = referenceChecksum(pseudo + udp)
        udp[6] = UInt8(c >> 8); udp[7] = UInt8(c & 0xFF)
        let ok = withBytes(udp) { UDPHeader.parse($0, $1, source: src, destination: dst, checked: true) }
        guard case .success(let u) = ok else { Issue.record("refused"); return }
        #expect(u.sourcePort == 12345 && u.destinationPort == 7 && u.length == 13)
        var bad = udp; bad[8] ^= 0x20
        #expect(withBytes(bad) { UDPHeader.parse($0, $1, source: src, destination: dst, checked: true) } == .failure(.udpChecksum))
        if case .failure = withBytes(bad, { UDPHeader.parse($0, $1, source: src, destination: dst, checked: false) }) { Issue.record("trusted refused") }
        var long = udp; long[5] = 200
        #expect(withBytes(long) { UDPHeader.parse($0, $1, source: src, destination: dst, checked: true) } == .failure(.udpLength))
        // The builder's full checksum verifies; the offload form stores the folded pseudo sum.
        let built = withBytes([UInt8](repeating: 0, count: 13)) { p, n -> [UInt8] in
            for (i, b) in payload.enumerated() { p.storeBytes(of: b, toByteOffset: 8 + i, as: UInt8.self) }
            UDPHeader.write(p, sourcePort: 12345, destinationPort: 7, payload: 5, source: src, destination: dst, offload: false)
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        }
        #expect(built == udp)
        let partial = withBytes([UInt8](repeating: 0, count: 13)) { p, _ -> UInt16 in
            UDPHeader.write(p, sourcePort: 1, destinationPort: 2, payload: 5, source: src, destination: dst, offload: true)
            return UInt16(p.load(fromByteOffset: 6, as: UInt8.self)) << 8 | UInt16(p.load(fromByteOffset: 7, as: UInt8.self))
        }
        #expect(partial == ~referenceChecksum(pseudo))
    }

    @Test func icmpEcho() {
        var m: [UInt8] = [8, 0, 0, 0, 0x12, 0x34, 0, 5, 1, 2, 3]
        let c = referenceChecksum(m)
        m[2] = UInt8(c >> 8); m[3] = UInt8(c & 0xFF)
        let e = withBytes(m) { ICMPEcho.parse($0, $1) }
        #expect(e?.type == 8 && e?.identifier == 0x1234 && e?.sequence == 5)
        var bad = m; bad[10] = 9
        #expect(withBytes(bad) { ICMPEcho.parse($0, $1) } == nil)
        var unreachable = m; unreachable[0] = 3
        #expect(withBytes(unreachable) { ICMPEcho.parse($0, $1) } == nil)
    }
}

@Suite struct ConfigTests {
    func parse(_ s: String) -> Result<IPv4.Config, IPv4.ConfigError> { IPv4.parseConfig(Array(s.utf8)) }

    @Test func accepted() {
        #expect(parse("dhcp") == .success(.dhcp))
        #expect(parse("10.0.0.2/24") == .success(.fixed(address: 0x0A00_0002, prefix: 24, gateway: nil)))
        #expect(parse("10.0.0.2/24,10.0.0.1") == .success(.fixed(address: 0x0A00_0002, prefix: 24, gateway: 0x0A00_0001)))
        #expect(parse("192.168.7.9/32") == .success(.fixed(address: 0xC0A8_0709, prefix: 32, gateway: nil)))
    }

    @Test(arguments: [("10.0.0.2", IPv4.ConfigError.prefix), ("10.0.0/24", .address), ("10.0.0.256/24", .address),
                      ("10.0.0.2/33", .prefix), ("10.0.0.2/0", .prefix), ("10.0.0.2/x", .prefix),
                      ("10.0.0.2/24,10.0.1.1", .gateway), ("10.0.0.2/24,10.0.0.2", .gateway),
                      ("10.0.0.2/24,10.0.0.255", .gateway), ("255.255.255.255/24", .address), ("0.0.0.0/8", .address),
                      ("1.2.3.4.5/8", .address), ("01234.1.1.1/8", .address)])
    func refused(text: String, error: IPv4.ConfigError) {
        #expect(parse(text) == .failure(error))
    }

    @Test func masks() {
        #expect(IPv4.prefix(ofMask: 0xFFFF_FF00) == 24)
        #expect(IPv4.prefix(ofMask: 0xFFFF_FFFF) == 32)
        #expect(IPv4.prefix(ofMask: 0xFF00_FF00) == nil)
        #expect(IPv4.mask(1) == 0x8000_0000)
    }
}

@Suite struct DHCPTests {
    let mac: UInt64 = 0x5254_0012_3456
    let xid: UInt32 = 0xDEAD_BEEF

    /// A server reply built field by field (RFC 2131 figure 1).
    func reply(type: UInt8, options extra: [UInt8] = [], xid: UInt32? = nil, op: UInt8 = 2) -> [UInt8] {
        var m = [UInt8](repeating: 0, count: 236)
        m[0] = op; m[1] = 1; m[2] = 6
        let x = xid ?? self.xid
        m[4] = UInt8(x >> 24); m[5] = UInt8(x >> 16 & 0xFF); m[6] = UInt8(x >> 8 & 0xFF); m[7] = UInt8(x & 0xFF)
        m[16] = 10; m[17] = 0; m[18] = 2; m[19] = 15                      // yiaddr
        for i in 0..<6 { m[28 + i] = UInt8(mac >> UInt64(40 - 8 * i) & 0xFF) }
        m += [99, 130, 83, 99]
        m += [53, 1, type, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 51, 4, 0, 0, 14, 16] + extra + [255]
        return m
    }

    @Test func offerParses() {
        let m = withBytes(reply(type: 2)) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) }
        #expect(m?.type == 2 && m?.yourAddress == 0x0A00_020F && m?.server == 0x0A00_0202)
        #expect(m?.subnetMask == 0xFFFF_FF00 && m?.router == 0x0A00_0202 && m?.leaseSeconds == 3600)
    }

    @Test func refusals() {
        #expect(withBytes(reply(type: 2, xid: 1)) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) } == nil)
        #expect(withBytes(reply(type: 2, op: 1)) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) } == nil)
        #expect(withBytes(reply(type: 1)) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) } == nil)   // a DISCOVER
        // An option running past the end.
        var truncated = reply(type: 2)
        truncated.removeLast()
        truncated += [12, 200, 65]
        #expect(withBytes(truncated) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) } == nil)
        #expect(withBytes(Array(reply(type: 2)[0..<239])) { DHCPMessage.parse($0, $1, mac: mac, transaction: xid) } == nil)
    }

    @Test func requestRoundTrip() {
        let bytes = withBytes([UInt8](repeating: 0xEE, count: DHCPMessage.maxSize)) { p, n -> [UInt8] in
            let len = DHCPMessage.write(p, type: DHCPMessage.request, mac: mac, transaction: xid, requested: 0x0A00_020F, server: 0x0A00_0202)
            return Array(UnsafeRawBufferPointer(start: p, count: len))
        }
        #expect(bytes.count == 300 && bytes[0] == 1 && bytes[10] == 0x80)
        #expect(Array(bytes[236..<240]) == [99, 130, 83, 99])
        #expect(Array(bytes[240..<243]) == [53, 1, 3])
        // Requested address (50) and server id (54) are among the options.
        let options = Array(bytes[240...])
        #expect(options.indices.contains { i in i + 5 < options.count && Array(options[i..<(i + 6)]) == [50, 4, 10, 0, 2, 15] })
        #expect(options.indices.contains { i in i + 5 < options.count && Array(options[i..<(i + 6)]) == [54, 4, 10, 0, 2, 2] })
    }
}

extension EthernetHeader: Equatable {
    public static func == (a: EthernetHeader, b: EthernetHeader) -> Bool {
        a.destination == b.destination && a.source == b.source && a.type == b.type
    }
}
extension IPv4: Equatable {
    public static func == (a: IPv4, b: IPv4) -> Bool {
        a.headerLength == b.headerLength && a.totalLength == b.totalLength && a.source == b.source && a.destination == b.destination && a.proto == b.proto
    }
}
extension UDPHeader: Equatable {
    public static func == (a: UDPHeader, b: UDPHeader) -> Bool {
        a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort && a.length == b.length
    }
}
extension ARPPacket: Equatable {
    public static func == (a: ARPPacket, b: ARPPacket) -> Bool { a.operation == b.operation && a.senderIP == b.senderIP && a.targetIP == b.targetIP }
}
extension VirtioNetHeader: Equatable {
    public static func == (a: VirtioNetHeader, b: VirtioNetHeader) -> Bool { a.flags == b.flags && a.numBuffers == b.numBuffers }
}
extension ICMPEcho: Equatable {
    public static func == (a: ICMPEcho, b: ICMPEcho) -> Bool { a.type == b.type && a.sequence == b.sequence }
}
extension DHCPMessage: Equatable {
    public static func == (a: DHCPMessage, b: DHCPMessage) -> Bool { a.type == b.type && a.yourAddress == b.yourAddress }
}
