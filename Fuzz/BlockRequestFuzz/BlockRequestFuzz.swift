// libFuzzer entry for virtio-blk requests: arbitrary bytes become a driver's descriptor
// table, available ring, request headers, data and discard segments, served against a
// small raw image. Nothing may trap, trip ASan, loop forever, change guest memory outside
// the chains' device-writable buffers and the used ring, change the image's size or its
// unreachable tail, or change a read-only image. On the chain-by-chain path a content
// model of the image is the oracle: every status byte, used.len, the data an IN returns,
// the GET_ID answer and the image after every OUT are predicted (DISCARD and
// WRITE_ZEROES only have their status checked; the model then takes the image as it is).
// Host I/O errors are injected by swapping the image's fd for a directory's, and the
// config space and feature offer are read at random widths. Built and run by Scripts/fuzz-blk.
//
// Input: byte 0 picks the queue size (1 << (b & 7): 1-128); byte 1 the features (bit 0
// INDIRECT_DESC, 1 EVENT_IDX, 2 DISCARD, 3 WRITE_ZEROES, 4 FLUSH); byte 2 bit 0 a
// read-only disk, bit 1 the path: 0 drives chains one by one through
// VirtioBlockBackend.handle (exact memory check, content model), 1 goes through the
// backend's own request loop (activate, two notifications, reset), with bit 2 set on the
// parallel (io_uring) backend: the notifications, then a service call per completion
// signal, then a reset that must leave nothing in flight; bit 3 every host I/O fails;
// bits 4-7 pick config-space reads. The rest is copied to guest address
// 0x1000: the descriptor table (16 * size bytes), the available ring, then free bytes
// for headers, data and indirect tables. The used ring is at 0x7000.
#if canImport(Glibc)
import Glibc
#endif
import Devices
import GuestMemory
import Virtio

// 16 whole sectors and a 100-byte tail the guest must never reach. On tmpfs when there is
// one: FLUSH is then free and ZERO_RANGE falls back to PUNCH_HOLE.
let imageSize = 16 * 512 + 100
let imagePattern = (0..<imageSize).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 7) }

/// A fresh image opened as `readOnly`, already unlinked (the fd keeps it alive).
func makeImage(_ tag: String, readOnly: Bool) -> DiskImage {
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    var template = Array("\(dir)/pvmm-blk-fuzz-\(tag)-XXXXXX".utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    precondition(fd >= 0, "mkstemp")
    restore(fd)
    close(fd)
    let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    let disk = try! DiskImage.open(path: path, readOnly: readOnly)
    unlink(path)
    precondition(disk.size == UInt64(imageSize))
    return disk
}

func restore(_ fd: Int32) {
    _ = ftruncate(fd, off_t(imageSize))
    _ = imagePattern.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
}

func contents(_ fd: Int32) -> [UInt8] {
    var st = stat()
    precondition(fstat(fd, &st) == 0)
    precondition(st.st_size == off_t(imageSize), "image size changed to \(st.st_size)")
    var out = [UInt8](repeating: 0, count: imageSize)
    _ = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    return out
}

let fuzzID = Array("fuzz".utf8) + [UInt8](repeating: 0, count: 16)
let rwBackend = VirtioBlockBackend(disk: makeImage("rw", readOnly: false), id: "fuzz")
/// A directory's fd: pread gives EISDIR, pwrite EBADF, fallocate fails. dup2'd over an
/// image's fd for a run, it turns every host data I/O into an error.
let failingFD = open("/", O_RDONLY | O_DIRECTORY)
let roBackend = VirtioBlockBackend(disk: makeImage("ro", readOnly: true), id: nil)

// eventfd(2) is not in Swift's Glibc module. The parallel backends signal it per completion.
@_silgen_name("eventfd")
func sys_eventfd(_ initial: UInt32, _ flags: Int32) -> Int32
let completions = sys_eventfd(0, 0o4000 | 0o2000000)  // EFD_NONBLOCK | EFD_CLOEXEC
let rwParallel = VirtioBlockBackend(disk: makeImage("rwp", readOnly: false), id: "fuzz", completions: completions)
let roParallel = VirtioBlockBackend(disk: makeImage("rop", readOnly: true), id: nil, completions: completions)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBlockRequests(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    guard input.count >= 3 else { return 0 }
    let queueSize = UInt16(1) << UInt16(input[0] & 7)
    var features: VirtioFeatures = [.version1]
    let bits: [(UInt8, VirtioFeatures)] = [(1, .indirectDesc), (2, .ringEventIdx), (4, .blkDiscard),
                                           (8, .blkWriteZeroes), (16, .blkFlush)]
    for (bit, f) in bits where input[1] & bit != 0 { features.insert(f) }
    let readOnly = input[2] & 1 != 0
    let throughBackend = input[2] & 2 != 0
    let parallel = throughBackend && input[2] & 4 != 0
    let failIO = input[2] & 8 != 0
    let backend = parallel ? (readOnly ? roParallel : rwParallel) : (readOnly ? roBackend : rwBackend)
    checkConfig(backend, selector: input[2] >> 4, features: features)
    var model = imagePattern
    let savedFD = failIO ? dup(backend.disk.fd) : -1
    if failIO { precondition(dup2(failingFD, backend.disk.fd) == backend.disk.fd) }
    defer {
        if failIO {
            _ = dup2(savedFD, backend.disk.fd)
            close(savedFD)
        }
    }

    try! memory.fill(0, at: 0, count: 32 << 10)
    try! memory.fill(0, at: 48 << 10, count: 32 << 10)
    let body = UnsafeRawBufferPointer(rebasing: input[3...])
    try! memory.write(bytes: UnsafeRawBufferPointer(rebasing: body.prefix(inputCap)), at: descBase)
    snapshot(into: &before)

    let availBase = descBase + 16 * UInt64(queueSize)
    var queue = try! SplitQueue(memory: memory, size: queueSize, maxSize: 128, descriptorTable: descBase,
                                availableRing: availBase, usedRing: usedBase, features: features)

    if throughBackend {
        backend.activate(queues: [queue], features: features)
        let first = backend.queueNotified(0)
        _ = "\(first)"
        let second = backend.queueNotified(0)
        // A failed device touches nothing more until reset.
        if first.failure != nil { precondition(second.requests == 0 && second.failure == nil) }
        precondition(first.epoch == backend.epoch && second.epoch == backend.epoch)
        if parallel {
            // What the device thread does when the ring signals: serve again (bounded).
            var v: UInt64 = 0
            for _ in 0..<64 where backend.requestsInFlight > 0 {
                var p = pollfd(fd: completions, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, 10)
                if read(completions, &v, 8) == 8 { _ = backend.serviceRequested() }
            }
        }
        backend.reset()
        precondition(backend.requestsInFlight == 0, "I/O in flight after reset")
    } else {
        var writable: [Buffer] = []
        for _ in 0..<(4 * Int(queueSize) + 4) {
            guard let head = try? queue.popAvailable() else { break }
            let chain: DescriptorChain
            do { chain = try queue.chain(head: head) } catch {
                _ = "\(error)"
                continue
            }
            writable += chain.writable
            let expected = predict(chain, model: &model, readOnly: readOnly, failIO: failIO, features: features)
            do throws(DeviceFault) {
                let len = try backend.handle(chain, features: features)
                precondition(len >= 1 && len <= chain.writableLength, "used.len \(len) of \(chain.writableLength)")
                let status = chain.writable.last!
                let got: UInt8 = try! memory.read(at: status.addr + UInt64(status.len) - 1)
                check(expected, status: got, len: len, chain: chain, model: &model, disk: backend.disk, failIO: failIO)
                try! queue.addUsed(head: head, len: len)
            } catch {
                _ = "\(error)"
                // Only a chain without a header or a status byte is malformed.
                precondition(chain.writableLength == 0 || chain.readableLength < 16, "unexpected fault: \(error)")
                precondition(expected == nil, "a well-formed request faulted")
            }
        }
        let usedEnd = usedBase + 6 + 8 * UInt64(queueSize)
        // 1 KiB chunks compared with memcmp first (was a byte loop over all of RAM: most
        // of this harness's time).
        forEachChangedByte { a in
            if a >= usedBase && a < usedEnd { return }
            precondition(writable.contains { a >= $0.addr && a - $0.addr < UInt64($0.len) },
                         "byte at \(a) changed outside the chains' writable buffers")
        }
    }

    if failIO {
        _ = dup2(savedFD, backend.disk.fd)
    }
    let now = contents(backend.disk.fd)
    if !throughBackend { precondition(now == model, "image differs from the content model") }
    if readOnly { precondition(now == imagePattern, "read-only image changed") }
    precondition(now[(16 * 512)...] == imagePattern[(16 * 512)...], "unreachable tail changed")
    if now != imagePattern { restore(backend.disk.fd) }
    return 0
}

/// What a well-formed request must produce: its status (several allowed when the
/// outcome depends on the host), the bytes an IN or GET_ID returns, and for an OUT the
/// model updated. Nil for a malformed chain (no header or no status byte).
struct Expectation: Equatable {
    var statuses: [UInt8]
    var data: [UInt8]? = nil
    /// DISCARD / WRITE_ZEROES: the model takes the image as it is afterwards.
    var resync = false
}

func readable(_ chain: DescriptorChain, skipping: Int) -> [UInt8] {
    var reader = chain.reader()
    reader.skip(skipping)
    var out = [UInt8](repeating: 0, count: max(0, Int(chain.readableLength) - skipping))
    _ = try! out.withUnsafeMutableBytes { try reader.read(into: $0) }
    return out
}

func predict(_ chain: DescriptorChain, model: inout [UInt8], readOnly: Bool, failIO: Bool,
             features: VirtioFeatures) -> Expectation? {
    guard chain.writableLength >= 1, chain.readableLength >= 16 else { return nil }
    let header = readable(chain, skipping: 0)
    let type = UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
    var sector: UInt64 = 0
    for i in 0..<8 { sector |= UInt64(header[8 + i]) << (8 * UInt64(i)) }
    let ok = VirtioBlk.statusOK, ioerr = VirtioBlk.statusIOErr, unsupp = VirtioBlk.statusUnsupported
    let capacity = UInt64(16 * 512)
    func range(_ length: UInt64) -> Range<Int>? {
        guard length % 512 == 0, sector < (1 << 54) else { return nil }
        let start = sector * 512
        guard start + length <= capacity else { return nil }
        return Int(start)..<Int(start + length)
    }
    switch type {
    case VirtioBlk.typeIn:
        guard let r = range(UInt64(chain.writableLength) - 1) else { return Expectation(statuses: [ioerr]) }
        if failIO && !r.isEmpty { return Expectation(statuses: [ioerr]) }
        return Expectation(statuses: [ok], data: Array(model[r]))
    case VirtioBlk.typeOut:
        let data = Array(header.dropFirst(16))
        guard !readOnly, let r = range(UInt64(data.count)) else { return Expectation(statuses: [ioerr]) }
        if failIO && !r.isEmpty { return Expectation(statuses: [ioerr]) }
        model.replaceSubrange(r, with: data)
        return Expectation(statuses: [ok])
    case VirtioBlk.typeFlush:
        // fsync of the directory standing in for the image succeeds: either is right.
        return Expectation(statuses: failIO ? [ok, ioerr] : [ok])
    case VirtioBlk.typeGetID:
        // The read-only backend has no id: 20 NULs.
        let id = readOnly ? [UInt8](repeating: 0, count: 20) : fuzzID
        return Expectation(statuses: [ok], data: Array(id.prefix(Int(chain.writableLength) - 1)))
    case VirtioBlk.typeDiscard, VirtioBlk.typeWriteZeroes:
        if readOnly { return Expectation(statuses: [ioerr]) }
        let discard = type == VirtioBlk.typeDiscard
        if !features.contains(discard ? .blkDiscard : .blkWriteZeroes) { return Expectation(statuses: [unsupp]) }
        return Expectation(statuses: [ok, ioerr, unsupp], resync: true)
    default:
        return Expectation(statuses: [unsupp])
    }
}

func check(_ e: Expectation?, status: UInt8, len: UInt32, chain: DescriptorChain, model: inout [UInt8],
           disk: DiskImage, failIO: Bool) {
    guard let e else { preconditionFailure("a malformed chain was served") }
    precondition(e.statuses.contains(status), "status \(status), expected one of \(e.statuses)")
    if e.resync {
        if !failIO { model = contents(disk.fd) }
        return
    }
    // Data goes only with OK (a failed IN may have moved some before the error).
    guard status == VirtioBlk.statusOK else { return }
    let expectedData = e.data ?? []
    precondition(len == UInt32(expectedData.count) + 1, "used.len \(len) for \(expectedData.count) data bytes")
    // Read back what the device wrote, unless the writable buffers overlap each other
    // (then the guest sees its own aliasing, which only harms it).
    let buffers = chain.writable
    for (i, a) in buffers.enumerated() {
        for b in buffers[(i + 1)...] where a.addr < b.addr + UInt64(b.len) && b.addr < a.addr + UInt64(a.len) { return }
    }
    var got: [UInt8] = []
    for b in buffers {
        var piece = [UInt8](repeating: 0, count: Int(b.len))
        try! piece.withUnsafeMutableBytes { try memory.read(into: $0, at: b.addr) }
        got += piece
    }
    precondition(Array(got.prefix(expectedData.count)) == expectedData, "the device returned the wrong bytes: \(buffers) got \(got.prefix(8)) expected \(expectedData.prefix(8))")
}

/// Config space (§5.2.4) read at the widths a driver uses, and the feature offer.
func checkConfig(_ backend: VirtioBlockBackend, selector: UInt8, features: VirtioFeatures) {
    var model = VirtioBlockModel(backend: backend)
    let offer = model.deviceFeatures
    let ro = backend.disk.readOnly
    precondition(offer.contains(.blkReadOnly) == ro && offer.contains(.blkDiscard) == !ro && offer.contains(.blkWriteZeroes) == !ro)
    var bytes = [UInt8](repeating: 0, count: VirtioBlk.configSize)
    let width = [1, 2, 4, 8][Int(selector & 3)]
    for offset in stride(from: Int(selector >> 2), to: VirtioBlk.configSize - width + 1, by: width) {
        bytes.withUnsafeMutableBytes { model.readConfig(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: $0[offset..<(offset + width)])) }
    }
    func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
    if selector >> 2 == 0 {
        precondition(u64(0) == 16, "capacity")
        precondition(u32(12) == VirtioBlk.segMax && u32(20) == 512, "seg_max / blk_size")
    }
    bytes.withUnsafeBytes { model.writeConfig(offset: Int(selector) % VirtioBlk.configSize, from: UnsafeRawBufferPointer(rebasing: $0[0..<1])) }
    _ = model.acceptFeatures(features)
}
