#if canImport(Glibc)
import Glibc
#endif
import CHostNet
import SystemPackage

/// Why a host network endpoint could not be opened or used. Each case carries what the
/// user must know to fix it; `description` is the message pvmm prints (status 2).
public enum HostNetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The tap does not exist and this process may not create it.
    case tapMissingNoPermission(name: String)
    /// The tap exists but belongs to another user or group (TUNSETIFF refused).
    case tapNotPermitted(name: String)
    case tapNameInvalid(name: String, reason: String)
    /// Another system-call failure on the tap (name, call, errno).
    case tap(name: String, call: String, errno: Errno)
    /// The inherited descriptor is closed, not a tun/tap device, or a layer-3 tun.
    case fdNotOpen(fd: Int32)
    case fdNotTap(fd: Int32, errno: Errno)
    case fdIsTun(fd: Int32, name: String)
    /// passt could not be started, or its socket did not answer.
    case passtNotInstalled
    case passtStart(errno: Errno)
    case passtSocket(path: String, errno: Errno)
    case passtSocketPath(path: String)

    public var description: String {
        switch self {
        case let .tapMissingNoPermission(name):
            "tap \(name) does not exist and pvmm may not create it: creating a tap needs CAP_NET_ADMIN; or create it once as root with `ip tuntap add dev \(name) mode tap user $(id -un)` (then `ip link set \(name) up`)"
        case let .tapNotPermitted(name):
            "tap \(name) exists but this user may not attach to it: it belongs to another user or group (recreate it with `ip tuntap add dev \(name) mode tap user $(id -un)`, or run with CAP_NET_ADMIN)"
        case let .tapNameInvalid(name, reason): "tap name '\(name)': \(reason)"
        case let .tap(name, call, errno): "tap \(name): \(call): \(errno)"
        case let .fdNotOpen(fd): "fd \(fd) is not an open file descriptor (the caller must pass it open)"
        case let .fdNotTap(fd, errno): "fd \(fd) is not an attached tap device (TUNGETIFF: \(errno))"
        case let .fdIsTun(fd, name): "fd \(fd) is the layer-3 tun device \(name), not a tap (IFF_TAP)"
        case .passtNotInstalled: "passt is not installed (Debian package `passt`), or not on PATH"
        case let .passtStart(errno): "could not start passt: \(errno)"
        case let .passtSocket(path, errno): "passt socket \(path) does not answer: \(errno) (is passt running with --socket \(path)?)"
        case let .passtSocketPath(path): "passt socket path '\(path)' is too long for a Unix socket (at most 107 bytes)"
        }
    }
}

/// A tap device opened for a virtio-net backend: IFF_TAP | IFF_NO_PI, non-blocking, with
/// a 12-byte virtio-net header (IFF_VNET_HDR + TUNSETVNETHDRSZ) when the device has one.
///
/// Free of Foundation and of the VMM's types, so the daemon can open taps with it for
/// VMMs that run unprivileged and hand them over as an fd (`--net fd=N`).
public final class Tap: @unchecked Sendable {
    // @unchecked: immutable after init; the fd's system calls are thread-safe.
    public let fd: Int32
    public let name: String
    /// Frames carry struct virtio_net_hdr_v1 (12 bytes) in front (IFF_VNET_HDR).
    public let vnetHeader: Bool
    /// The interface's MTU when it was opened (1500 if unreadable).
    public let mtu: Int
    /// The kernel takes frames with VIRTIO_NET_HDR_GSO_UDP_L4 headers (UDP segmentation
    /// offload, Linux 6.2+) and cuts them into datagrams itself: probed once with
    /// TUNSETOFFLOAD, which refuses flags it does not know.
    public private(set) var udpSegmentation = false
    private let owned: Bool

    /// The size of struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6), what the tap is told to use.
    public static let vnetHeaderSize: Int32 = 12
    public static let maxNameBytes = 15

    private init(fd: Int32, name: String, vnetHeader: Bool, owned: Bool) {
        self.fd = fd
        self.name = name
        self.vnetHeader = vnetHeader
        self.owned = owned
        let m = chostnet_get_mtu(name)
        mtu = m > 0 ? Int(m) : 1500
    }

    deinit { if owned { close(fd) } }

    /// Attaches to the tap `name`, creating it when it does not exist and the caller has
    /// CAP_NET_ADMIN (a created tap vanishes when the fd closes, unless made persistent).
    public static func open(name: String) throws(HostNetError) -> Tap {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes else {
            throw .tapNameInvalid(name: name, reason: "1 to \(maxNameBytes) bytes")
        }
        guard name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ",") }) else {
            throw .tapNameInvalid(name: name, reason: "printable ASCII without spaces, '/' or ','")
        }
        let fd = chostnet_open_tun()
        if fd < 0 { throw .tap(name: name, call: "open /dev/net/tun", errno: Errno(rawValue: -fd)) }
        let flags = chostnet_iff_tap() | chostnet_iff_no_pi() | chostnet_iff_vnet_hdr()
        let rc = chostnet_tunsetiff(fd, name, flags)
        if rc < 0 {
            close(fd)
            if rc == -EPERM {
                throw interfaceExists(name) ? .tapNotPermitted(name: name) : .tapMissingNoPermission(name: name)
            }
            throw .tap(name: name, call: "TUNSETIFF", errno: Errno(rawValue: -rc))
        }
        let hs = chostnet_set_vnet_hdr_size(fd, vnetHeaderSize)
        if hs < 0 {
            close(fd)
            throw .tap(name: name, call: "TUNSETVNETHDRSZ", errno: Errno(rawValue: -hs))
        }
        let tap = Tap(fd: fd, name: name, vnetHeader: true, owned: true)
        tap.probeUDPSegmentation()
        try tap.setOffload(checksum: false)
        return tap
    }

    /// Takes over an already-open tap fd (inherited from the caller). It must be attached
    /// to a tap (not a layer-3 tun); with IFF_VNET_HDR its header size is set to 12, without
    /// it frames are plain Ethernet and the device offers no checksum offload.
    public static func adopt(fd: Int32) throws(HostNetError) -> Tap {
        guard fcntl(fd, F_GETFD) >= 0 else { throw .fdNotOpen(fd: fd) }
        var flags: UInt32 = 0
        var nameBytes = [CChar](repeating: 0, count: 16)
        let rc = chostnet_tungetiff(fd, &flags, &nameBytes)
        if rc < 0 { throw .fdNotTap(fd: fd, errno: Errno(rawValue: -rc)) }
        let name = nameBytes.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        guard flags & chostnet_iff_tap() != 0 else { throw .fdIsTun(fd: fd, name: name) }
        let vnet = flags & chostnet_iff_vnet_hdr() != 0
        if vnet {
            let hs = chostnet_set_vnet_hdr_size(fd, vnetHeaderSize)
            if hs < 0 { throw .tap(name: name, call: "TUNSETVNETHDRSZ", errno: Errno(rawValue: -hs)) }
        }
        let nb = chostnet_set_nonblocking(fd)
        if nb < 0 { throw .tap(name: name, call: "O_NONBLOCK", errno: Errno(rawValue: -nb)) }
        // Never inherited further (passt, other children).
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tap = Tap(fd: fd, name: name, vnetHeader: vnet, owned: true)
        if vnet {
            tap.probeUDPSegmentation()
            try tap.setOffload(checksum: false)
        }
        return tap
    }

    /// TUNSETOFFLOAD: with `checksum`, the tap may hand us frames whose checksum is still
    /// to be completed (VIRTIO_NET_HDR_F_NEEDS_CSUM), which only a driver that acked
    /// VIRTIO_NET_F_GUEST_CSUM accepts; without it the host stack completes them. With
    /// `udpSegmentation` too (the driver acked GUEST_USO4 and GUEST_USO6), it may hand us
    /// UDP segmentation frames (up to 64 KiB, many datagrams) instead of cutting them up.
    public func setOffload(checksum: Bool, udpSegmentation: Bool = false) throws(HostNetError) {
        guard vnetHeader else { return }
        let flags = checksum ? chostnet_tun_f_csum() | (udpSegmentation && self.udpSegmentation ? chostnet_tun_f_uso() : 0) : 0
        let rc = chostnet_set_offload(fd, flags)
        if rc < 0 { throw .tap(name: name, call: "TUNSETOFFLOAD", errno: Errno(rawValue: -rc)) }
    }

    private func probeUDPSegmentation() {
        udpSegmentation = chostnet_set_offload(fd, chostnet_tun_f_csum() | chostnet_tun_f_uso()) == 0
    }

    static func interfaceExists(_ name: String) -> Bool {
        access("/sys/class/net/\(name)", F_OK) == 0
    }
}
