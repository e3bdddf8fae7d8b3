// libFuzzer entry for the VM definition codec (what the daemon's API, config files and
// the VMM process read): arbitrary bytes yield a ConfigError or a VMConfig, never a trap,
// a sanitizer report, a hang or unbounded recursion; the same bytes as a `--disk` or
// `--net` value parse or fail cleanly. Built and run by Scripts/fuzz-config.
import VMDefinition

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: data == nil ? 0 : size)
    // The JSON layer alone: whatever parses must encode and parse back to itself.
    if let v = try? JSONValue(parsing: bytes) {
        let again = try! JSONValue(parsing: v.encodedBytes)
        precondition(again == v, "encode/parse round trip changed the value")
    }
    do {
        let c = try VMConfig(json: bytes)
        // A decoded definition re-encodes to one that decodes to the same value.
        precondition(try! VMConfig(json: c.jsonBytes) == c, "VMConfig round trip changed the value")
        do { try c.validate(hostMemoryMiB: 4096, hostMaxVCPUs: 8) } catch { _ = error.flagDescription }
    } catch {
        _ = error.description  // every message must format without trapping
        _ = error.flagDescription
    }
    // The flag syntaxes (`--disk`, `--net`): what parses re-validates cleanly.
    if let text = String(validating: bytes, as: UTF8.self), text.utf8.count < 512 {
        if let d = try? DiskConfig(argument: text) { try! d.validate(field: "disks") }
        if let n = try? NetConfig(argument: text) { try! n.validate(field: "nets") }
    }
    return 0
}
