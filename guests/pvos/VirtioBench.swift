// `blk bench DISK read|write seq|rand BS DEPTH SECONDS`: keeps DEPTH requests in flight
// (each with its own data buffer), refills every completed slot, then one kick per
// batch; the CPU sleeps until three quarters of what is in flight has completed (one
// interrupt; half measured 20% more host CPU per request in wake-ups),
// so the device never runs dry while the CPU wakes.

enum BlockBench {
    static func usage() {
        Console.write("usage: blk bench DISK read|write seq|rand BS DEPTH SECONDS (BS multiple of 512 up to 1 MiB, DEPTH 1-64)\n")
    }

    static func run(_ disk: BlockDevice, write: Bool, random: Bool, _ bs: UInt64, _ depth: UInt64, _ seconds: UInt64) {
        guard let q = disk.queue else { return }
        let maxDepth = UInt64(min(64, q.size / 3))
        guard bs >= 512, bs % 512 == 0, bs <= 1 << 20, depth >= 1, depth <= maxDepth,
              seconds >= 1, seconds <= 600, disk.capacity >= bs / 512 else { usage(); return }
        let stride = (bs + pageSize - 1) & ~(pageSize - 1)
        let pages = stride / pageSize * depth
        let buffers = Pages.allocate(pages)
        guard buffers != 0 else { Console.write("blk bench: out of memory\n"); return }
        if write { for i in 0..<depth { fillPattern(buffers + i * stride, Int(bs), seed: UInt32(i + 1)) } }
        let sectors = bs / 512
        let blocks = disk.capacity / sectors
        var nextBlock: UInt64 = 0
        var rng: UInt64 = rdtsc() | 1
        var free: [Int] = []
        for i in 0..<Int(depth) { free.append(i) }
        var slotOf = [Int](repeating: 0, count: q.size)
        // Per-request latency, submit to collect, in 1 us buckets (the last: >= 10 ms).
        var submitted = [UInt64](repeating: 0, count: q.size)
        var histogram = [UInt32](repeating: 0, count: latencyBuckets)
        var inFlight = 0
        var completed: UInt64 = 0, errors: UInt64 = 0
        let type = write ? BlockType.write : BlockType.read
        let t0 = rdtsc()
        let end = t0 &+ seconds * Platform.tscKHz * 1000
        var last = t0
        var stopping = false
        var failed = false
        while !(stopping && inFlight == 0) {
            if !stopping {
                while let slot = free.last {
                    var block = nextBlock
                    if random {
                        rng ^= rng << 13
                        rng ^= rng >> 7
                        rng ^= rng << 17
                        block = rng % blocks
                    } else {
                        nextBlock = (nextBlock + 1) % blocks
                    }
                    guard let head = disk.submit(type, block * sectors, buffers + UInt64(slot) * stride, UInt32(bs)) else { break }
                    free.removeLast()
                    slotOf[head] = slot
                    submitted[head] = rdtsc()
                    inFlight += 1
                }
                q.kick()
            }
            let now = rdtsc()
            let n = q.collect(interrupt: !Virtio.polling) { head, length in
                if disk.status(head) != 0 || length > UInt32(bs) + 1 { errors += 1 }
                histogram[min(Int((now &- submitted[head]) * 1000 / Platform.tscKHz), latencyBuckets - 1)] += 1
                free.append(slotOf[head])
                inFlight -= 1
                completed += 1
            }
            if n > 0 {
                last = rdtsc()
            } else if !disk.waitFor(timeoutMs: 5000, wakeAfter: max(1, inFlight - inFlight / 4), { q.pending }) {
                failed = true
                break
            }
            if rdtsc() >= end { stopping = true }
        }
        if failed {
            _ = disk.start()
            Console.write("blk bench: device failure (reset)\n")
            Pages.release(buffers, pages)
            return
        }
        Pages.release(buffers, pages)
        let ns = max((last &- t0) * 1_000_000 / Platform.tscKHz, 1)
        let ms = max(ns / 1_000_000, 1)
        Console.write("bench: ")
        Console.writeDecimal(completed * 1_000_000_000 / ns)
        Console.write(" IOPS ")
        let tenths = completed * bs * 10_000 / ms / 1_048_576
        Console.writeDecimal(tenths / 10)
        Console.put(46)
        Console.writeDecimal(tenths % 10)
        Console.write(" MiB/s (")
        Console.writeDecimal(completed)
        Console.write(" requests, ")
        Console.writeDecimal(errors)
        Console.write(" errors, ")
        Console.writeMilli(ns / 1_000_000)
        Console.write(" s) latency p50 ")
        Console.writeDecimal(percentile(histogram, completed, 50))
        Console.write(" us p99 ")
        Console.writeDecimal(percentile(histogram, completed, 99))
        Console.write(" us\n")
    }

    static let latencyBuckets = 10_000

    /// The bucket (us) holding the `p`th percentile of `total` samples.
    static func percentile(_ histogram: [UInt32], _ total: UInt64, _ p: UInt64) -> UInt64 {
        let rank = (total * p + 99) / 100
        var seen: UInt64 = 0
        for (us, n) in histogram.enumerated() {
            seen += UInt64(n)
            if seen >= rank && seen > 0 { return UInt64(us) }
        }
        return 0
    }
}
