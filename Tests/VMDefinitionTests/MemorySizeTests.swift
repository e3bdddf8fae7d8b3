import Testing
import VMDefinition

@Suite struct MemorySizeTests {
    @Test func plainNumbersAreMiB() throws {
        #expect(try VMConfig.memoryMiB(argument: "128") == 128)
        #expect(try VMConfig.memoryMiB(argument: "0") == 0)
    }

    @Test func suffixesAreBinaryUnits() throws {
        #expect(try VMConfig.memoryMiB(argument: "512M") == 512)
        #expect(try VMConfig.memoryMiB(argument: "512m") == 512)
        #expect(try VMConfig.memoryMiB(argument: "2G") == 2048)
        #expect(try VMConfig.memoryMiB(argument: "2g") == 2048)
        #expect(try VMConfig.memoryMiB(argument: "1536MiB") == 1536)
        #expect(try VMConfig.memoryMiB(argument: "3GB") == 3072)
        #expect(try VMConfig.memoryMiB(argument: "1T") == 1 << 20)
        #expect(try VMConfig.memoryMiB(argument: "65536K") == 64)
    }

    @Test func negativeNumbersParseSoValidationSaysOutOfRange() throws {
        #expect(try VMConfig.memoryMiB(argument: "-5") == -5)
        #expect(try VMConfig.memoryMiB(argument: "-1G") == -1024)
        let c = VMConfig(kernel: "k", memoryMiB: try VMConfig.memoryMiB(argument: "-5"))
        #expect(throws: ConfigError(field: "memory_mib", message: "-5 MiB is too small: a VM needs at least 8 MiB")) { try c.validate() }
    }

    @Test func badSizesNameTheProblem() {
        for (arg, why) in [("lots", "is not a size"), ("", "is not a size"), ("12Q", "unknown unit"), ("M", "is not a size"),
                           ("1000K", "whole number of MiB"), ("99999999999999999999", "too large"),
                           ("9223372036854775807G", "too large"), ("1.5G", "unknown unit"), ("2 G", "unknown unit"), ("--cpus", "is not a size")] {
            do {
                _ = try VMConfig.memoryMiB(argument: arg)
                Issue.record("\(arg) parsed")
            } catch {
                #expect(error.field == "memory_mib")
                #expect(error.message.contains(why) && error.message.contains("'\(arg)'"), "\(arg): \(error.message)")
            }
        }
    }
}
