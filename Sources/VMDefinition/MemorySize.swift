extension VMConfig {
    /// Parses `--memory`: a number of MiB (`512`), or a number with a binary-unit suffix
    /// K, M, G or T, optionally followed by `iB` or `B` (`512M`, `2G`, `1536MiB`,
    /// `4194304K`). The size must be a whole number of MiB. A negative number parses, so
    /// `validate()` reports it as out of range like any other size.
    public static func memoryMiB(argument: String) throws(ConfigError) -> Int {
        func bad(_ why: String) -> ConfigError {
            ConfigError(field: "memory_mib", message: "'\(argument)' \(why) (a size in MiB, or with a suffix: 512M, 2G)")
        }
        var text = Substring(argument)
        let negative = text.first == "-"
        if negative { text = text.dropFirst() }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { throw bad("is not a size") }
        var unit = text.dropFirst(digits.count).uppercased()
        if unit.hasSuffix("IB") { unit.removeLast(2) } else if unit.hasSuffix("B") && unit.count == 2 { unit.removeLast() }
        // The value's shift relative to MiB: K is 2^-10 MiB, T is 2^20.
        let shift: Int
        switch unit {
        case "", "M": shift = 0
        case "K": shift = -10
        case "G": shift = 10
        case "T": shift = 20
        default: throw bad("has an unknown unit (K, M, G or T)")
        }
        guard let n = Int(digits) else { throw bad("is too large") }
        let mib: Int
        if shift >= 0 {
            guard n <= Int.max >> shift else { throw bad("is too large") }
            mib = n << shift
        } else {
            guard n & ((1 << -shift) - 1) == 0 else { throw bad("is not a whole number of MiB") }
            mib = n >> -shift
        }
        return negative ? -mib : mib
    }
}
