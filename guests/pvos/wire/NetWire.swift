// Network wire formats for pvos: byte order, the Internet checksum, and parsers/builders
// for the virtio-net header (virtio 1.2 §5.1.6), Ethernet II, ARP (RFC 826), IPv4
// (RFC 791), ICMP echo (RFC 792), UDP (RFC 768) and DHCP (RFC 2131/2132).
// Pure code over raw bytes, no kernel symbols: the same file is compiled into the guest
// (Embedded Swift) and into the host's PvosNetWire target for unit tests and the
// libFuzzer harness (Fuzz/NetWireFuzz). Every received frame is hostile: each parser
// checks every length before it reads and returns a typed reason when it refuses.

/// Big-endian loads and stores at byte offsets (callers have checked the bounds).
public enum Wire {
    @inline(__always) public static func u8(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 {
        p.load(fromByteOffset: o, as: UInt8.self)
    }
    @inline(__always) public static func be16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(u8(p, o)) << 8 | UInt16(u8(p, o + 1))
    }
    @inline(__always) public static func be32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 {
        UInt32(be16(p, o)) << 16 | UInt32(be16(p, o + 2))
    }
    /// Little-endian 16 bits (the virtio-net header is little-endian, §5.1.6).
    @inline(__always) public static func le16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(u8(p, o)) | UInt16(u8(p, o + 1)) << 8
    }
    /// Six bytes as the low 48 bits of an integer, first byte most significant.
    @inline(__always) public static func mac(_ p: UnsafeRawPointer, _ o: Int) -> UInt64 {
        UInt64(be16(p, o)) << 32 | UInt64(be32(p, o + 2))
    }
    @inline(__always) public static func set8(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt8) {
        p.storeBytes(of: v, toByteOffset: o, as: UInt8.self)
    }
    @inline(__always) public static func set16(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt16) {
        set8(p, o, UInt8(truncatingIfNeeded: v >> 8))
        set8(p, o + 1, UInt8(truncatingIfNeeded: v))
    }
    @inline(__always) public static func set32(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt32) {
        set16(p, o, UInt16(truncatingIfNeeded: v >> 16))
        set16(p, o + 2, UInt16(truncatingIfNeeded: v))
    }
    @inline(__always) public static func setLE16(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt16) {
        set8(p, o, UInt8(truncatingIfNeeded: v))
        set8(p, o + 1, UInt8(truncatingIfNeeded: v >> 8))
    }
    @inline(__always) public static func setMAC(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt64) {
        set16(p, o, UInt16(truncatingIfNeeded: v >> 32))
        set32(p, o + 2, UInt32(truncatingIfNeeded: v))
    }
}

/// The Internet checksum (RFC 1071): the one's-complement sum is independent of byte
/// order, so it adds native 16-bit words and swaps once at the end.
public enum Checksum {
    /// Unfolded sum of `count` bytes at `p` (big-endian word order), plus `initial`.
    public static func sum(_ p: UnsafeRawPointer, _ count: Int, _ initial: UInt64 = 0) -> UInt64 {
        var s: UInt64 = 0
        var i = 0
        while i + 8 <= count {
            let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            s &+= w & 0xFFFF_FFFF
            s &+= w >> 32
            i += 8
        }
        while i + 2 <= count { s &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt16.self)); i += 2 }
        if i < count { s &+= UInt64(Wire.u8(p, i)) }   // the odd byte is the high half of a BE word: low half natively
        // Fold to 16 bits of the native-order sum, then swap into big-endian order.
        while s >> 16 != 0 { s = (s & 0xFFFF) &+ (s >> 16) }
        let native = UInt16(s)
        #if _endian(little)
        let be = native.byteSwapped
        #else
        let be = native
        #endif
        return UInt64(be) &+ initial
    }

    /// Folds to 16 bits (not complemented).
    public static func fold(_ s: UInt64) -> UInt16 {
        var v = s
        while v >> 16 != 0 { v = (v & 0xFFFF) &+ (v >> 16) }
        return UInt16(v)
    }

    /// The checksum field value: complement of the folded sum.
    public static func finish(_ s: UInt64) -> UInt16 { ~fold(s) }

    /// IPv4 pseudo header (RFC 768/793): source, destination, protocol, L4 length.
    public static func pseudo(_ src: UInt32, _ dst: UInt32, _ proto: UInt8, _ length: Int) -> UInt64 {
        UInt64(src >> 16) + UInt64(src & 0xFFFF) + UInt64(dst >> 16) + UInt64(dst & 0xFFFF)
            + UInt64(proto) + UInt64(length)
    }

    /// A received region whose checksum field is included sums to 0xFFFF.
    public static func verifies(_ p: UnsafeRawPointer, _ count: Int, _ initial: UInt64 = 0) -> Bool {
        fold(sum(p, count, initial)) == 0xFFFF
    }
}

/// Why a received frame was refused (each has a drop counter in `net`).
public enum DropReason: Int, CaseIterable, Error {
    case badVirtioHeader = 0, runt, oversize, etherType, arp, ipHeader, ipChecksum, ipFragment
    case notForUs, icmp, udpLength, udpChecksum, noPort, dhcp, noBuffer, arpFailed

    public static let count = 16
    public var name: StaticString {
        switch self {
        case .badVirtioHeader: return "vnet-header"
        case .runt: return "runt"
        case .oversize: return "oversize"
        case .etherType: return "ethertype"
        case .arp: return "arp"
        case .ipHeader: return "ip-header"
        case .ipChecksum: return "ip-checksum"
        case .ipFragment: return "ip-fragment"
        case .notForUs: return "not-for-us"
        case .icmp: return "icmp"
        case .udpLength: return "udp-length"
        case .udpChecksum: return "udp-checksum"
        case .noPort: return "no-port"
        case .dhcp: return "dhcp"
        case .noBuffer: return "no-buffer"
        case .arpFailed: return "arp-unresolved"
        }
    }
}

/// struct virtio_net_hdr (§5.1.6), 12 bytes with VERSION_1 (num_buffers always there).
public struct VirtioNetHeader {
    public static let size = 12
    public static let needsCsum: UInt8 = 1, dataValid: UInt8 = 2
    public var flags: UInt8
    public var gsoType: UInt8
    public var csumStart: UInt16
    public var csumOffset: UInt16
    public var numBuffers: UInt16
    public var gsoSize: UInt16 = 0

    /// Nil unless `count` holds a header; the GSO type must be NONE, or with
    /// `udpSegments` (the driver acked GUEST_USO4/6) UDP_L4: a frame of datagrams of
    /// gso_size payload bytes each, whose checksum the device left partial or checked.
    public static func parse(_ p: UnsafeRawPointer, _ count: Int, udpSegments: Bool = false) -> VirtioNetHeader? {
        guard count >= size else { return nil }
        let h = VirtioNetHeader(flags: Wire.u8(p, 0), gsoType: Wire.u8(p, 1), csumStart: Wire.le16(p, 6),
                                csumOffset: Wire.le16(p, 8), numBuffers: Wire.le16(p, 10), gsoSize: Wire.le16(p, 4))
        guard h.flags & ~(needsCsum | dataValid) == 0 else { return nil }
        guard h.gsoType == 0 || (udpSegments && h.gsoType == gsoUDPL4 && h.gsoSize > 0 && h.flags != 0) else { return nil }
        return h
    }

    /// Payload bytes per datagram of a UDP segmentation frame; 0 for a plain frame.
    public var segment: Int { gsoType == VirtioNetHeader.gsoUDPL4 ? Int(gsoSize) : 0 }

    public static let gsoUDPL4: UInt8 = 5

    /// A transmit header; with `csum` the device completes the L4 checksum from `start`
    /// (relative to the frame) and stores it at `start + offset`. With `udpSegments`
    /// (HOST_USO, needs `csum`) the frame is a UDP segmentation request: `headerLength`
    /// bytes of Ethernet/IP/UDP headers, then payload the device cuts into datagrams of
    /// `segment` bytes (gso_type UDP_L4, §5.1.6.2).
    public static func write(_ p: UnsafeMutableRawPointer, csum: (start: Int, offset: Int)?,
                             udpSegments: (headerLength: Int, segment: Int)? = nil) {
        for i in 0..<size { Wire.set8(p, i, 0) }
        if let c = csum {
            Wire.set8(p, 0, needsCsum)
            Wire.setLE16(p, 6, UInt16(c.start))
            Wire.setLE16(p, 8, UInt16(c.offset))
            if let g = udpSegments {
                Wire.set8(p, 1, gsoUDPL4)
                Wire.setLE16(p, 2, UInt16(g.headerLength))
                Wire.setLE16(p, 4, UInt16(g.segment))
            }
        }
        Wire.setLE16(p, 10, 1)
    }
}

public enum EtherType {
    public static let ipv4: UInt16 = 0x0800, arp: UInt16 = 0x0806
}

public struct EthernetHeader {
    public static let size = 14
    /// Largest frame accepted or sent: 1500-byte MTU plus the header (no VLAN tags, no FCS).
    public static let maxFrame = 1514
    public static let broadcast: UInt64 = 0xFFFF_FFFF_FFFF
    /// A UDP segmentation frame: a whole 64 KiB IPv4 packet behind the header.
    public static let maxSegmentedFrame = 14 + 65535
    public var destination: UInt64
    public var source: UInt64
    public var type: UInt16

    /// `limit`: `maxSegmentedFrame` for a UDP segmentation frame.
    public static func parse(_ p: UnsafeRawPointer, _ count: Int, limit: Int = maxFrame) -> Result<EthernetHeader, DropReason> {
        guard count >= size else { return .failure(.runt) }
        guard count <= limit else { return .failure(.oversize) }
        let h = EthernetHeader(destination: Wire.mac(p, 0), source: Wire.mac(p, 6), type: Wire.be16(p, 12))
        guard h.type == EtherType.ipv4 || h.type == EtherType.arp else { return .failure(.etherType) }
        return .success(h)
    }

    public static func write(_ p: UnsafeMutableRawPointer, destination: UInt64, source: UInt64, type: UInt16) {
        Wire.setMAC(p, 0, destination)
        Wire.setMAC(p, 6, source)
        Wire.set16(p, 12, type)
    }
}

/// An Ethernet/IPv4 ARP packet (28 bytes).
public struct ARPPacket {
    public static let size = 28
    public static let request: UInt16 = 1, reply: UInt16 = 2
    public var operation: UInt16
    public var senderMAC: UInt64
    public var senderIP: UInt32
    public var targetMAC: UInt64
    public var targetIP: UInt32

    public static func parse(_ p: UnsafeRawPointer, _ count: Int) -> ARPPacket? {
        guard count >= size, Wire.be16(p, 0) == 1, Wire.be16(p, 2) == EtherType.ipv4,
              Wire.u8(p, 4) == 6, Wire.u8(p, 5) == 4 else { return nil }
        let a = ARPPacket(operation: Wire.be16(p, 6), senderMAC: Wire.mac(p, 8), senderIP: Wire.be32(p, 14),
                          targetMAC: Wire.mac(p, 18), targetIP: Wire.be32(p, 24))
        guard a.operation == request || a.operation == reply else { return nil }
        // A sender claiming a multicast/broadcast MAC or IP would poison the cache.
        guard a.senderMAC >> 40 & 1 == 0, a.senderMAC != 0, !IPv4.isBroadcastOrMulticast(a.senderIP) else { return nil }
        return a
    }

    public func write(_ p: UnsafeMutableRawPointer) {
        Wire.set16(p, 0, 1)
        Wire.set16(p, 2, EtherType.ipv4)
        Wire.set8(p, 4, 6)
        Wire.set8(p, 5, 4)
        Wire.set16(p, 6, operation)
        Wire.setMAC(p, 8, senderMAC)
        Wire.set32(p, 14, senderIP)
        Wire.setMAC(p, 18, targetMAC)
        Wire.set32(p, 24, targetIP)
    }
}

public enum IPProtocol {
    public static let icmp: UInt8 = 1, udp: UInt8 = 17
}

/// An IPv4 header. `headerLength` is IHL * 4; `totalLength` bounds the payload (the
/// frame may carry Ethernet padding beyond it).
public struct IPv4 {
    public static let minHeader = 20
    public var headerLength: Int
    public var totalLength: Int
    public var identification: UInt16
    public var ttl: UInt8
    public var proto: UInt8
    public var source: UInt32
    public var destination: UInt32

    public static func isBroadcastOrMulticast(_ a: UInt32) -> Bool { a == 0xFFFF_FFFF || a >> 28 == 0xE }

    public static func parse(_ p: UnsafeRawPointer, _ count: Int) -> Result<IPv4, DropReason> {
        guard count >= minHeader else { return .failure(.ipHeader) }
        let vihl = Wire.u8(p, 0)
        let ihl = Int(vihl & 0xF) * 4
        let total = Int(Wire.be16(p, 2))
        guard vihl >> 4 == 4, ihl >= minHeader, ihl <= count, total >= ihl, total <= count else { return .failure(.ipHeader) }
        guard Checksum.verifies(p, ihl) else { return .failure(.ipChecksum) }
        // No reassembly: MF set or a non-zero offset is a fragment (DF is fine; the
        // reserved bit must be 0).
        let fragment = Wire.be16(p, 6)
        guard fragment & 0x8000 == 0 else { return .failure(.ipHeader) }
        guard fragment & 0x3FFF == 0 else { return .failure(.ipFragment) }
        let h = IPv4(headerLength: ihl, totalLength: total, identification: Wire.be16(p, 4), ttl: Wire.u8(p, 8),
                     proto: Wire.u8(p, 9), source: Wire.be32(p, 12), destination: Wire.be32(p, 16))
        // Packets from a broadcast or multicast source are never legitimate.
        guard !isBroadcastOrMulticast(h.source) else { return .failure(.ipHeader) }
        return .success(h)
    }

    /// A 20-byte header with DF set and its checksum.
    public static func write(_ p: UnsafeMutableRawPointer, source: UInt32, destination: UInt32, proto: UInt8,
                             payloadLength: Int, identification: UInt16, ttl: UInt8 = 64) {
        Wire.set8(p, 0, 0x45)
        Wire.set8(p, 1, 0)
        Wire.set16(p, 2, UInt16(minHeader + payloadLength))
        Wire.set16(p, 4, identification)
        Wire.set16(p, 6, 0x4000)
        Wire.set8(p, 8, ttl)
        Wire.set8(p, 9, proto)
        Wire.set16(p, 10, 0)
        Wire.set32(p, 12, source)
        Wire.set32(p, 16, destination)
        Wire.set16(p, 10, Checksum.finish(Checksum.sum(p, minHeader)))
    }

    /// "10.0.0.2": four decimal octets 0-255, no leading junk.
    public static func parseAddress<C: Collection>(_ s: C) -> UInt32? where C.Element == UInt8 {
        var value: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var dots = 0
        for c in s {
            if c == 46 {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet
                octet = 0; digits = 0; dots += 1
            } else if c >= 48 && c <= 57 {
                guard digits < 3 else { return nil }
                octet = octet * 10 + UInt32(c - 48)
                guard octet <= 255 else { return nil }
                digits += 1
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return value << 8 | octet
    }

    /// The `ip=` cmdline value: "dhcp" or "ADDR/PREFIX[,GATEWAY]" (prefix 1-32; the
    /// gateway must be on the subnet and be neither the address nor the network/broadcast).
    public enum Config: Equatable {
        case dhcp
        case fixed(address: UInt32, prefix: Int, gateway: UInt32?)
    }

    public enum ConfigError: Error, Equatable {
        case address, prefix, gateway
    }

    public static func parseConfig(_ s: [UInt8]) -> Result<Config, ConfigError> {
        if s.count == 4 && s[0] == 100 && s[1] == 104 && s[2] == 99 && s[3] == 112 { return .success(.dhcp) }
        guard let slash = s.firstIndex(of: 47) else { return .failure(.prefix) }
        guard let address = parseAddress(s[..<slash]) else { return .failure(.address) }
        let rest = s[(slash + 1)...]
        let comma = rest.firstIndex(of: 44)
        let prefixText = comma.map { rest[..<$0] } ?? rest
        guard !prefixText.isEmpty, prefixText.count <= 2, prefixText.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return .failure(.prefix) }
        var prefix = 0
        for c in prefixText { prefix = prefix * 10 + Int(c - 48) }
        guard prefix >= 1 && prefix <= 32 else { return .failure(.prefix) }
        guard address != 0, !isBroadcastOrMulticast(address) else { return .failure(.address) }
        var gateway: UInt32? = nil
        if let comma {
            guard let g = parseAddress(rest[(comma + 1)...]) else { return .failure(.gateway) }
            let m = mask(prefix)
            guard g != address, g & m == address & m, prefix >= 31 || (g & ~m != 0 && g & ~m != ~m) else { return .failure(.gateway) }
            gateway = g
        }
        return .success(.fixed(address: address, prefix: prefix, gateway: gateway))
    }

    public static func mask(_ prefix: Int) -> UInt32 { prefix <= 0 ? 0 : ~UInt32(0) << UInt32(32 - min(prefix, 32)) }

    /// A netmask's prefix length, nil if the mask is not contiguous.
    public static func prefix(ofMask m: UInt32) -> Int? {
        let n = m.nonzeroBitCount
        return mask(n) == m ? n : nil
    }
}

/// ICMP echo request/reply (types 8/0): the checksum covers the whole message.
public struct ICMPEcho {
    public static let headerSize = 8
    public static let request: UInt8 = 8, reply: UInt8 = 0
    public var type: UInt8
    public var identifier: UInt16
    public var sequence: UInt16

    /// Nil for anything but a well-formed echo request or reply.
    public static func parse(_ p: UnsafeRawPointer, _ count: Int) -> ICMPEcho? {
        guard count >= headerSize, Checksum.verifies(p, count) else { return nil }
        let type = Wire.u8(p, 0)
        guard (type == request || type == reply) && Wire.u8(p, 1) == 0 else { return nil }
        return ICMPEcho(type: type, identifier: Wire.be16(p, 4), sequence: Wire.be16(p, 6))
    }

    /// Header with the checksum over it and the `payload` bytes already at p + 8.
    public static func write(_ p: UnsafeMutableRawPointer, type: UInt8, identifier: UInt16, sequence: UInt16, payload: Int) {
        Wire.set8(p, 0, type)
        Wire.set8(p, 1, 0)
        Wire.set16(p, 2, 0)
        Wire.set16(p, 4, identifier)
        Wire.set16(p, 6, sequence)
        Wire.set16(p, 2, Checksum.finish(Checksum.sum(p, headerSize + payload)))
    }
}

public struct UDPHeader {
    public static let size = 8
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// Header plus data, from the length field (the IP payload may be longer: ignored).
    public var length: Int

    /// `checked`: verify a non-zero checksum against the pseudo header (false when the
    /// device vouched for it, or left it partial: DATA_VALID / NEEDS_CSUM).
    public static func parse(_ p: UnsafeRawPointer, _ count: Int, source: UInt32, destination: UInt32,
                             checked: Bool) -> Result<UDPHeader, DropReason> {
        guard count >= size else { return .failure(.udpLength) }
        let length = Int(Wire.be16(p, 4))
        guard length >= size, length <= count else { return .failure(.udpLength) }
        if checked && Wire.be16(p, 6) != 0 {
            guard Checksum.verifies(p, length, Checksum.pseudo(source, destination, IPProtocol.udp, length)) else {
                return .failure(.udpChecksum)
            }
        }
        return .success(UDPHeader(sourcePort: Wire.be16(p, 0), destinationPort: Wire.be16(p, 2), length: length))
    }

    /// Header for `payload` bytes already at p + 8. `offload`: store only the folded
    /// pseudo-header sum (the device completes it, §5.1.6.2); else the full checksum.
    public static func write(_ p: UnsafeMutableRawPointer, sourcePort: UInt16, destinationPort: UInt16, payload: Int,
                             source: UInt32, destination: UInt32, offload: Bool) {
        let length = size + payload
        Wire.set16(p, 0, sourcePort)
        Wire.set16(p, 2, destinationPort)
        Wire.set16(p, 4, UInt16(length))
        let pseudo = Checksum.pseudo(source, destination, IPProtocol.udp, length)
        if offload {
            Wire.set16(p, 6, Checksum.fold(pseudo))
        } else {
            Wire.set16(p, 6, 0)
            let c = Checksum.finish(Checksum.sum(p, length, pseudo))
            Wire.set16(p, 6, c == 0 ? 0xFFFF : c)   // 0 means "no checksum" in UDP
        }
    }
}

/// The DHCP messages a client sends and receives (BOOTP format, RFC 2131 §2; options
/// RFC 2132). Only the options the client uses are kept.
public struct DHCPMessage {
    public static let clientPort: UInt16 = 68, serverPort: UInt16 = 67
    public static let fixedSize = 236, cookie: UInt32 = 0x6382_5363
    public static let discover: UInt8 = 1, offer: UInt8 = 2, request: UInt8 = 3
    public static let ack: UInt8 = 5, nak: UInt8 = 6

    public var type: UInt8 = 0
    public var transaction: UInt32 = 0
    public var yourAddress: UInt32 = 0
    public var server: UInt32 = 0
    public var subnetMask: UInt32? = nil
    public var router: UInt32? = nil
    public var leaseSeconds: UInt32? = nil

    public init() {}

    /// A server reply (op 2) for `mac` with `transaction`. Options are walked with every
    /// length checked against the buffer; a message without a valid type is refused.
    public static func parse(_ p: UnsafeRawPointer, _ count: Int, mac: UInt64, transaction: UInt32) -> DHCPMessage? {
        guard count >= fixedSize + 4, Wire.u8(p, 0) == 2, Wire.u8(p, 1) == 1, Wire.u8(p, 2) == 6,
              Wire.be32(p, 4) == transaction, Wire.mac(p, 28) == mac, Wire.be32(p, fixedSize) == cookie else { return nil }
        var m = DHCPMessage()
        m.transaction = transaction
        m.yourAddress = Wire.be32(p, 16)
        var i = fixedSize + 4
        while i < count {
            let code = Wire.u8(p, i)
            if code == 255 { break }
            if code == 0 { i += 1; continue }
            guard i + 1 < count else { return nil }
            let length = Int(Wire.u8(p, i + 1))
            let data = i + 2
            guard data + length <= count else { return nil }
            switch code {
            case 53 where length == 1: m.type = Wire.u8(p, data)
            case 54 where length == 4: m.server = Wire.be32(p, data)
            case 1 where length == 4: m.subnetMask = Wire.be32(p, data)
            case 3 where length >= 4 && length % 4 == 0: m.router = Wire.be32(p, data)
            case 51 where length == 4: m.leaseSeconds = Wire.be32(p, data)
            default: break
            }
            i = data + length
        }
        guard m.type == offer || m.type == ack || m.type == nak else { return nil }
        return m
    }

    /// A DISCOVER or REQUEST (with `requested`/`server` for a REQUEST) into `p`, which
    /// must hold `maxSize` bytes; returns the length written.
    public static let maxSize = 300
    public static func write(_ p: UnsafeMutableRawPointer, type: UInt8, mac: UInt64, transaction: UInt32,
                             requested: UInt32 = 0, server: UInt32 = 0, secondsElapsed: UInt16 = 0) -> Int {
        for i in 0..<maxSize { Wire.set8(p, i, 0) }
        Wire.set8(p, 0, 1)          // BOOTREQUEST
        Wire.set8(p, 1, 1)          // Ethernet
        Wire.set8(p, 2, 6)
        Wire.set32(p, 4, transaction)
        Wire.set16(p, 8, secondsElapsed)
        Wire.set16(p, 10, 0x8000)   // broadcast replies: no address to unicast to yet
        Wire.setMAC(p, 28, mac)
        Wire.set32(p, fixedSize, cookie)
        var i = fixedSize + 4
        func option(_ code: UInt8, _ bytes: [UInt8]) {
            Wire.set8(p, i, code)
            Wire.set8(p, i + 1, UInt8(bytes.count))
            for (k, b) in bytes.enumerated() { Wire.set8(p, i + 2 + k, b) }
            i += 2 + bytes.count
        }
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
        option(53, [type])
        option(61, [1, UInt8(mac >> 40), UInt8(truncatingIfNeeded: mac >> 32), UInt8(truncatingIfNeeded: mac >> 24),
                    UInt8(truncatingIfNeeded: mac >> 16), UInt8(truncatingIfNeeded: mac >> 8), UInt8(truncatingIfNeeded: mac)])
        if type == request {
            option(50, be(requested))
            if server != 0 { option(54, be(server)) }
        }
        option(55, [1, 3, 51, 54])  // parameters: mask, router, lease, server id
        Wire.set8(p, i, 255)
        return maxSize              // zero padded: some servers ignore BOOTP messages under 300 bytes
    }
}
