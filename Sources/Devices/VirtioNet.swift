import HostNet
import Synchronization
import Virtio

/// virtio-net (virtio 1.2 §5.1) constants.
public enum VirtioNetSpec {
    /// One queue pair (§5.1.2): receiveq1 = 0, transmitq1 = 1; no control queue.
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let queueSize: UInt16 = 256

    /// struct virtio_net_hdr_v1 (§5.1.6): flags u8, gso_type u8, hdr_len, gso_size,
    /// csum_start, csum_offset, num_buffers (le16 each). 12 bytes with VERSION_1, whether
    /// or not MRG_RXBUF is negotiated.
    public static let headerSize = 12
    public static let headerFlagsOffset = 0
    public static let headerGSOTypeOffset = 1
    public static let headerHdrLenOffset = 2
    public static let headerGSOSizeOffset = 4
    public static let headerCsumStartOffset = 6
    public static let headerCsumOffsetOffset = 8
    public static let headerNumBuffersOffset = 10
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM.
    public static let flagNeedsCsum: UInt8 = 1
    /// VIRTIO_NET_HDR_F_DATA_VALID.
    public static let flagDataValid: UInt8 = 2
    /// VIRTIO_NET_HDR_GSO_NONE; ECN (0x80) is a modifier bit.
    public static let gsoNone: UInt8 = 0
    public static let gsoECN: UInt8 = 0x80
    /// VIRTIO_NET_HDR_GSO_UDP_L4: UDP segmentation offload (with HOST_USO): the frame
    /// carries one UDP header and payload the host cuts into datagrams of gso_size bytes.
    public static let gsoUDPL4: UInt8 = 5
    /// Where a UDP header's checksum field is (csum_offset of a UDP_L4 frame), and its size.
    public static let udpChecksumOffset = 6
    public static let udpHeader = 8

    /// Ethernet header, and room for one 802.1Q tag, beyond the MTU.
    public static let ethernetHeader = 14
    public static let vlanTag = 4
    /// Frames shorter than an Ethernet header carry nothing and are dropped.
    public static let minFrame = 14
    /// A transmit chain whose frame is larger than this cannot be an Ethernet frame even
    /// with GSO (the IPv4 total length ends at 64 KiB): a broken driver, so
    /// DEVICE_NEEDS_RESET.
    public static let maxTransmitChainFrame = 65536

    /// struct virtio_net_config (§5.1.4) up to `mtu`: mac[6], status, max_virtqueue_pairs,
    /// mtu. Without SPEED_DUPLEX (not offered) the fields after it are not exposed.
    public static let configSize = 12
    /// VIRTIO_NET_S_LINK_UP.
    public static let statusLinkUp: UInt16 = 1
}

/// A MAC address.
public struct MACBytes: Equatable, Sendable {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
    public init(_ b: [UInt8]) {
        precondition(b.count == 6)
        bytes = (b[0], b[1], b[2], b[3], b[4], b[5])
    }
    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }
    public static func == (a: MACBytes, b: MACBytes) -> Bool { a.array == b.array }

    /// 52:54:00:12:34:(56 + index): locally administered, unicast, QEMU's prefix, so
    /// nets in one VM differ and a fixed layout gives fixed addresses.
    public static func generated(index: Int) -> MACBytes {
        MACBytes([0x52, 0x54, 0x00, 0x12, 0x34, UInt8(truncatingIfNeeded: 0x56 + index)])
    }
}

/// Per-device network counters, in PVMM_STATS as `net0.rx_packets=...`.
public final class NetStats: Sendable {
    public let rxPackets = StatCounter()
    public let rxBytes = StatCounter()
    public let txPackets = StatCounter()
    public let txBytes = StatCounter()
    /// A host frame larger than the buffers the guest posted (dropped).
    public let rxDropTooBig = StatCounter()
    /// A host frame shorter than its header, or a read error (dropped).
    public let rxDropError = StatCounter()
    /// Receive passes that found no guest buffer: the tap is then not read (the host
    /// queues or drops, the guest is never blocked on).
    public let rxNoBuffers = StatCounter()
    /// Transmit chains without a whole virtio-net header.
    public let txDropShort = StatCounter()
    /// Transmit frames shorter than an Ethernet header, or above MTU + 18.
    public let txDropSize = StatCounter()
    /// Transmit headers asking for GSO that was not negotiated (only UDP_L4 is offered,
    /// HOST_USO), a malformed UDP_L4 request, or a bad checksum request.
    public let txDropHeader = StatCounter()
    /// Transmit frames sent with UDP segmentation offload (each carries many datagrams;
    /// `txPackets` counts it once).
    public let txSegmented = StatCounter()
    /// Transmit chains with device-writable buffers (§5.1.6.2: transmit buffers are
    /// device-readable only).
    public let txDropMalformed = StatCounter()
    /// The host refused the frame (tap down, passt gone).
    public let txDropError = StatCounter()

    public init() {}

    public var named: [NamedCounter] {
        [NamedCounter("rx_packets", rxPackets), NamedCounter("rx_bytes", rxBytes),
         NamedCounter("tx_packets", txPackets), NamedCounter("tx_bytes", txBytes),
         NamedCounter("tx_uso_frames", txSegmented),
         NamedCounter("rx_drop_too_big", rxDropTooBig), NamedCounter("rx_drop_error", rxDropError),
         NamedCounter("rx_no_buffers", rxNoBuffers),
         NamedCounter("tx_drop_short", txDropShort), NamedCounter("tx_drop_size", txDropSize),
         NamedCounter("tx_drop_header", txDropHeader), NamedCounter("tx_drop_malformed", txDropMalformed),
         NamedCounter("tx_drop_error", txDropError)]
    }

    /// Every drop, whatever the reason.
    public var drops: UInt64 {
        [rxDropTooBig, rxDropError, txDropShort, txDropSize, txDropHeader, txDropMalformed, txDropError]
            .reduce(0) { $0 + $1.value }
    }
}

/// The virtio-net model: features and config space (§5.1.3, §5.1.4). The work happens in
/// `VirtioNetBackend`.
///
/// Features: VERSION_1 (transport), RING_EVENT_IDX, INDIRECT_DESC, MAC, STATUS, MTU,
/// MRG_RXBUF; CSUM and GUEST_CSUM only when the channel carries virtio-net headers (a
/// tap with IFF_VNET_HDR: the host kernel completes partial checksums); HOST_USO and
/// GUEST_USO4/6 when that tap's kernel segments UDP (one frame, many datagrams, both
/// ways: the per-frame cost is paid once). No other GSO, no control queue, no multiqueue.
public struct VirtioNetModel: VirtioBackedModel, Sendable {
    public let backend: VirtioNetBackend

    public init(backend: VirtioNetBackend) { self.backend = backend }

    public var deviceType: VirtioDeviceType { .net }

    public var deviceFeatures: VirtioFeatures {
        var f: VirtioFeatures = [.ringEventIdx, .indirectDesc, .netMAC, .netStatus, .netMTU, .netMergeableRxBuffers]
        if backend.channel.vnetHeader { f.formUnion([.netCsum, .netGuestCsum]) }
        if backend.channel.vnetHeader && backend.channel.udpSegmentation { f.formUnion([.netHostUSO, .netGuestUSO4, .netGuestUSO6]) }
        return f
    }

    public var queueMaxSizes: [UInt16] { [VirtioNetSpec.queueSize, VirtioNetSpec.queueSize] }
    public var configSize: Int { VirtioNetSpec.configSize }

    public mutating func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        let mac = backend.mac.array
        let status = backend.linkUp ? VirtioNetSpec.statusLinkUp : 0
        let mtu = UInt16(clamping: backend.mtu)
        for i in 0..<data.count {
            let o = offset + i
            switch o {
            case 0..<6: data[i] = mac[o]
            case 6, 7: data[i] = UInt8(truncatingIfNeeded: status >> (8 * UInt16(o - 6)))
            case 8: data[i] = 1  // max_virtqueue_pairs (meaningful only with MQ)
            case 10, 11: data[i] = UInt8(truncatingIfNeeded: mtu >> (8 * UInt16(o - 10)))
            default: data[i] = 0
            }
        }
    }

    /// The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (§5.1.4.2); nothing else is
    /// writable.
    public mutating func writeConfig(offset: Int, from data: UnsafeRawBufferPointer) {}

    public mutating func activate(queues: [SplitQueue?], features: VirtioFeatures) throws(DeviceActivationError) {
        guard queues.count == 2, queues[0] != nil, queues[1] != nil else {
            throw DeviceActivationError(reason: "DRIVER_OK without both receiveq1 and transmitq1 enabled")
        }
        backend.activate(queues: queues, features: features)
    }

    public mutating func reset() { backend.reset() }
}
