// libFuzzer entry for virtio-net: arbitrary bytes become a driver's receive and transmit
// queues (descriptor tables, available rings, buffers) and the host frames waiting on a
// fake channel; the backend runs its receive and transmit paths over them. Nothing may
// trap, trip ASan or loop forever; guest memory may change only inside device-writable
// receive buffers and the used rings; every frame handed to the host must be one the
// device may send (size within 14..MTU+18, or up to 64 KiB as a UDP_L4 segmentation
// request when HOST_USO was negotiated; sanitized header); a failed device does
// nothing more until reset. Built and run by Scripts/fuzz-virtio-net.
//
// Input: byte 0 the queue size (1 << (b & 7): 1-128); byte 1 the features (bit 0
// INDIRECT_DESC, 1 EVENT_IDX, 2 MRG_RXBUF, 3 CSUM, 4 GUEST_CSUM), bit 5 a channel with
// virtio-net headers (a tap) else bare frames (passt), bit 6 the host refuses the first
// sends (EAGAIN), bit 7 HOST_USO (with CSUM and headers only) and GUEST_USO4/6 (with
// GUEST_CSUM and MRG_RXBUF; host frames then up to 9,000 bytes); byte 2 the number of
// host frames (b & 7) and byte 3 their size seed.
// The rest is copied to guest address 0x1000: the receive descriptor table at 0x1000
// and its available ring after it, the transmit table at 0x3000 and its ring after it,
// free bytes for buffers and indirect tables. Used rings at 0x7000 and 0x7800.
#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import HostNet
import Virtio

let rxBase: UInt64 = 0x1000, txBase: UInt64 = 0x3000
let rxUsed: UInt64 = 0x7000, txUsed: UInt64 = 0x7800

/// The host side: queued frames in, sent frames recorded.
final class FuzzChannel: FrameChannel, @unchecked Sendable {
    var vnetHeader = true
    let mtu = 1500
    var udpSegmentation: Bool { vnetHeader }
    var fd: Int32 { -1 }
    var hasPendingOutput: Bool { false }
    var inbound: [[UInt8]] = []
    var sent: [[UInt8]] = []
    var refuse = 0
    func setGuestOffload(checksum: Bool, udpSegmentation: Bool) {}
    func receive(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        guard !inbound.isEmpty else { return .wouldBlock }
        let f = inbound.removeFirst()
        _ = f.withUnsafeBytes { copy($0, into: iov) }
        return .done(f.count)
    }
    func send(_ iov: UnsafeBufferPointer<iovec>) -> FrameIOResult {
        if refuse > 0 { refuse -= 1; return .wouldBlock }
        var f: [UInt8] = []
        for v in iov { f += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len) }
        sent.append(f)
        return .done(f.count)
    }
    func flush() -> FrameIOResult { .done(0) }
}

final class NoInterest: IOInterest, @unchecked Sendable {
    func setInterest(_ fd: Int32, _ events: IOEvents) {}
    func remove(_ fd: Int32) {}
}

final class NoNotifier: Notifier, @unchecked Sendable {
    func signal() {}
}

let channel = FuzzChannel()
let backend: VirtioNetBackend = {
    let b = VirtioNetBackend(channel: channel, mac: MACBytes([0x52, 0x54, 0, 0, 0, 1]), stats: NetStats(), service: NoNotifier())
    b.attach(NoInterest())
    return b
}()

/// Device-writable ranges of every chain the rx ring offers (what the device may write),
/// or nil when a writable buffer overlaps the rings or tables (the device would then
/// change the chains under the harness's model of them).
func receiveWritable(_ q: SplitQueue, size: UInt16) -> [Buffer]? {
    var out: [Buffer] = []
    let idx: UInt16 = (try? memory.read(at: rxBase + 16 * UInt64(size) + 2)) ?? 0
    for i in 0..<min(Int(idx), Int(size)) {
        let head: UInt16 = (try? memory.read(at: rxBase + 16 * UInt64(size) + 4 + 2 * UInt64(i))) ?? 0
        guard let c = try? q.chain(head: head) else { continue }
        out += c.writable
    }
    let protected: [(UInt64, UInt64)] = [(rxBase, txBase + 16 * UInt64(size) + 6 + 2 * UInt64(size)), (rxUsed, 0x8000)]
    for b in out {
        for (lo, hi) in protected where b.addr < hi && b.addr + UInt64(b.len) > lo { return nil }
    }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioNet(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 4 else { return 0 }
    let queueSize = UInt16(1) << UInt16(input[0] & 7)
    var features: VirtioFeatures = [.version1]
    let bits: [(UInt8, VirtioFeatures)] = [(1, .indirectDesc), (2, .ringEventIdx), (4, .netMergeableRxBuffers),
                                           (8, .netCsum), (16, .netGuestCsum)]
    for (bit, f) in bits where input[1] & bit != 0 { features.insert(f) }
    channel.vnetHeader = input[1] & 32 != 0
    if !channel.vnetHeader { features.subtract([.netCsum, .netGuestCsum]) }  // not offered then
    if input[1] & 128 != 0 && features.contains(.netCsum) { features.insert(.netHostUSO) }
    if input[1] & 128 != 0 && features.isSuperset(of: [.netGuestCsum, .netMergeableRxBuffers]) {
        features.formUnion([.netGuestUSO4, .netGuestUSO6])   // host frames may then exceed the MTU
    }
    let uso = features.contains(.netHostUSO)
    channel.refuse = input[1] & 64 != 0 ? 2 : 0
    channel.sent = []
    channel.inbound = (0..<Int(input[2] & 7)).map { i in
        let length = 1 + (Int(input[3]) &* 37 &+ i &* 997) % (input[1] & 128 != 0 ? 9000 : 1700)
        return (0..<length).map { UInt8(truncatingIfNeeded: $0 &+ i) }
    }

    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    let body = UnsafeRawBufferPointer(rebasing: input[4...])
    try! memory.write(bytes: UnsafeRawBufferPointer(rebasing: body.prefix(inputCap)), at: descBase)

    let rx = try! SplitQueue(memory: memory, size: queueSize, maxSize: 128, descriptorTable: rxBase,
                             availableRing: rxBase + 16 * UInt64(queueSize), usedRing: rxUsed, features: features)
    let tx = try! SplitQueue(memory: memory, size: queueSize, maxSize: 128, descriptorTable: txBase,
                             availableRing: txBase + 16 * UInt64(queueSize), usedRing: txUsed, features: features)
    guard let writable = receiveWritable(rx, size: queueSize) else { return 0 }
    snapshot(into: &before)

    backend.activate(queues: [rx, tx], features: features)
    var failed = false
    for step in 0..<6 {
        let out: BackendOutcome
        switch step {
        case 0: out = backend.serviceRequested()
        case 1: out = backend.hostEvent(.readable)
        case 2: out = backend.queueNotified(1)
        case 3: out = backend.hostEvent(.writable)
        case 4: out = backend.queueNotified(0)
        default: out = backend.hostEvent([.readable, .writable])
        }
        _ = "\(out)"
        if failed { precondition(out.requests == 0 && out.failure == nil, "a failed device kept working") }
        if out.failure != nil { failed = true }
    }
    backend.reset()

    let maxFrame = 14 + 4 + 1500 + (channel.vnetHeader ? 12 : 0)
    for f in channel.sent {
        let header = channel.vnetHeader ? 12 : 0
        let segmented = channel.vnetHeader && f.count >= 12 && f[1] == 5
        precondition(f.count >= header + 14 && (f.count <= maxFrame || (segmented && f.count <= 12 + 65536)), "sent a \(f.count)-byte frame")
        if channel.vnetHeader {
            precondition((f[1] == 0 || (segmented && uso && f[0] == 1)) && (f[0] == 0 || (f[0] == 1 && features.contains(.netCsum))),
                         "unsanitized header \(f[0..<12])")
            precondition((segmented || f[2..<6].allSatisfy { $0 == 0 }) && f[10] == 0 && f[11] == 0, "header fields leaked \(f[0..<12])")
        }
    }
    snapshot(into: &after)
    let usedEnd = 6 + 8 * UInt64(queueSize)
    for i in 0..<after.count where after[i] != before[i] {
        let a = guestAddress(i)
        if (a >= rxUsed && a < rxUsed + usedEnd) || (a >= txUsed && a < txUsed + usedEnd) { continue }
        precondition(writable.contains { a >= $0.addr && a - $0.addr < UInt64($0.len) },
                     "byte at \(a) changed outside the receive chains' writable buffers")
    }
    return 0
}
