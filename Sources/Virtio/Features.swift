// Constants from the virtio 1.2 specification: feature bits (§2.2, §6), device status
// (§2.1) and device IDs (§5). Values only; the rules that use them live in the
// transport and the queue.

/// A set of 64 feature bits (virtio 1.2 §2.2). Bits 0-23 are device-specific, 24-40 are
/// reserved for the queue and transport (§6); the same bit number means different things
/// for different device types, hence the device-prefixed names below.
public struct VirtioFeatures: OptionSet, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The set holding only feature bit `bit` (0-63).
    public init(bit: Int) { self.rawValue = 1 << UInt64(bit) }

    // MARK: Reserved feature bits (§6)

    /// §2.7.5.3: the driver may use indirect descriptor tables.
    public static let indirectDesc = VirtioFeatures(bit: 28)
    /// §2.7.7, §2.7.10: used_event / avail_event notification suppression.
    public static let ringEventIdx = VirtioFeatures(bit: 29)
    /// §6.1: a non-legacy (1.x) device. Virtio-mmio version 2 requires it.
    public static let version1 = VirtioFeatures(bit: 32)
    /// §6.1: the device sits behind an IOMMU / uses platform DMA translation.
    public static let accessPlatform = VirtioFeatures(bit: 33)
    /// §2.8: packed virtqueues (not implemented here).
    public static let ringPacked = VirtioFeatures(bit: 34)
    /// §2.7.9: buffers are used in the order they were made available.
    public static let inOrder = VirtioFeatures(bit: 35)
    /// §6.1: memory accesses need platform (not just SMP) ordering.
    public static let orderPlatform = VirtioFeatures(bit: 36)
    /// §6.1: single-root I/O virtualization (PCI only).
    public static let srIOV = VirtioFeatures(bit: 37)
    /// §2.9: QueueNotify carries extra data, not just the queue index.
    public static let notificationData = VirtioFeatures(bit: 38)
    /// §2.9: the driver writes a device-provided value instead of the queue index.
    public static let notifConfigData = VirtioFeatures(bit: 39)
    /// §2.6.1: per-queue reset (QueueReset register).
    public static let ringReset = VirtioFeatures(bit: 40)

    // MARK: Block device (§5.2.3)

    public static let blkSizeMax = VirtioFeatures(bit: 1)
    public static let blkSegMax = VirtioFeatures(bit: 2)
    public static let blkGeometry = VirtioFeatures(bit: 4)
    public static let blkReadOnly = VirtioFeatures(bit: 5)
    public static let blkBlockSize = VirtioFeatures(bit: 6)
    public static let blkFlush = VirtioFeatures(bit: 9)
    public static let blkTopology = VirtioFeatures(bit: 10)
    public static let blkConfigWCE = VirtioFeatures(bit: 11)
    public static let blkMultiQueue = VirtioFeatures(bit: 12)
    public static let blkDiscard = VirtioFeatures(bit: 13)
    public static let blkWriteZeroes = VirtioFeatures(bit: 14)
    public static let blkLifetime = VirtioFeatures(bit: 15)
    public static let blkSecureErase = VirtioFeatures(bit: 16)

    // MARK: Console device (§5.3.3)

    public static let consoleSize = VirtioFeatures(bit: 0)
    public static let consoleMultiport = VirtioFeatures(bit: 1)
    public static let consoleEmergencyWrite = VirtioFeatures(bit: 2)

    // MARK: Network device (§5.1.3), the ones pvmm offers or must recognise

    /// The device handles packets with partial checksums (driver -> device).
    public static let netCsum = VirtioFeatures(bit: 0)
    /// The driver handles packets with partial checksums (device -> driver).
    public static let netGuestCsum = VirtioFeatures(bit: 1)
    /// Config `mtu` is valid: the maximum MTU the driver should use.
    public static let netMTU = VirtioFeatures(bit: 3)
    public static let netMAC = VirtioFeatures(bit: 5)
    public static let netGuestTSO4 = VirtioFeatures(bit: 7)
    public static let netHostTSO4 = VirtioFeatures(bit: 11)
    /// Receive frames may span several chains (num_buffers in the header).
    public static let netMergeableRxBuffers = VirtioFeatures(bit: 15)
    /// Config `status` is valid (LINK_UP).
    public static let netStatus = VirtioFeatures(bit: 16)
    public static let netControlQueue = VirtioFeatures(bit: 17)
    /// The driver takes UDP segmentation frames (gso_type UDP_L4) over IPv4 and IPv6
    /// (§5.1.6.4); pvmm offers both or neither, as the tap enables them together.
    public static let netGuestUSO4 = VirtioFeatures(bit: 54)
    public static let netGuestUSO6 = VirtioFeatures(bit: 55)
    /// The device takes UDP segmentation offload frames (gso_type UDP_L4, §5.1.6.2);
    /// requires netCsum.
    public static let netHostUSO = VirtioFeatures(bit: 56)
}

/// The device status field (virtio 1.2 §2.1). One byte in the spec, a 32-bit register in
/// virtio-mmio (§4.2.2).
public struct DeviceStatus: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The guest found the device.
    public static let acknowledge = DeviceStatus(rawValue: 1)
    /// The guest has a driver for it.
    public static let driver = DeviceStatus(rawValue: 2)
    /// The driver is set up and the device is live.
    public static let driverOK = DeviceStatus(rawValue: 4)
    /// Feature negotiation is complete (kept only if the device accepts the features).
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// Set by the device: it hit an unrecoverable error and needs a reset (§2.1.2).
    public static let deviceNeedsReset = DeviceStatus(rawValue: 64)
    /// Set by the driver: it gave up on the device.
    public static let failed = DeviceStatus(rawValue: 128)
}

/// Virtio device IDs (virtio 1.2 §5). DeviceID 0 means "no device" to the driver.
public enum VirtioDeviceType: UInt32, Sendable {
    case net = 1
    case block = 2
    case console = 3
    case entropy = 4
    case balloon = 5
    case vsock = 19
}
