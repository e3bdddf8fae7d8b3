enum VirtioEvil { static func run() {} }
enum BlockBench { static func run(_ d: BlockDevice, write: Bool, random: Bool, _ bs: UInt64, _ depth: UInt64, _ seconds: UInt64) {} }
