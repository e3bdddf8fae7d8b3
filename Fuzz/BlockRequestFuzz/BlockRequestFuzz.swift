// libFuzzer entry for virtio-blk requests: arbitrary bytes become a driver's descriptor
// table, available ring, request headers, data and discard segments, served against a
// small raw image. Nothing may trap, trip ASan, loop forever, change guest memory outside
// the chains' device-writable buffers and the used ring, change the image's size or its
// unreachable tail, or change a read-only image. Built and run by Scripts/fuzz-blk.
//
// Input: byte 0 picks the queue size (1 << (b & 7): 1-128); byte 1 the features (bit 0
// INDIRECT_DESC, 1 EVENT_IDX, 2 DISCARD, 3 WRITE_ZEROES, 4 FLUSH); byte 2 bit 0 a
// read-only disk, bit 1 the path: 0 drives chains one by one through
// VirtioBlockBackend.handle (exact memory check), 1 goes through the backend's own
// request loop (activate, two notifications, reset). The rest is copied to guest address
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

let rwBackend = VirtioBlockBackend(disk: makeImage("rw", readOnly: false), id: "fuzz")
let roBackend = VirtioBlockBackend(disk: makeImage("ro", readOnly: true), id: nil)

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
    let backend = readOnly ? roBackend : rwBackend

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
        backend.reset()
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
            do throws(DeviceFault) {
                let len = try backend.handle(chain, features: features)
                precondition(len >= 1 && len <= chain.writableLength, "used.len \(len) of \(chain.writableLength)")
                try! queue.addUsed(head: head, len: len)
            } catch {
                _ = "\(error)"
                // Only a chain without a header or a status byte is malformed.
                precondition(chain.writableLength == 0 || chain.readableLength < 16, "unexpected fault: \(error)")
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

    let now = contents(backend.disk.fd)
    if readOnly { precondition(now == imagePattern, "read-only image changed") }
    precondition(now[(16 * 512)...] == imagePattern[(16 * 512)...], "unreachable tail changed")
    if now != imagePattern { restore(backend.disk.fd) }
    return 0
}
