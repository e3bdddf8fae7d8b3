// libFuzzer entry for the control socket's request parser (what any local client with
// access to a VMM's socket sends): arbitrary bytes yield a ControlError or a
// ControlRequest, never a trap, a sanitizer report, a hang or unbounded recursion; a
// parsed request re-encodes to one that parses to the same value, and every error
// response is valid JSON that reads back as the same error. Built and run by
// Scripts/fuzz-control.
import VMControl
import VMDefinition

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControlRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: data == nil ? 0 : size)
    do {
        let r = try ControlRequest(line: bytes)
        precondition(try! ControlRequest(line: r.json.line.dropLast()) == r, "request round trip changed the value")
    } catch {
        let response = try! JSONValue(parsing: error.response.encodedBytes)
        precondition(ControlError(response: response) == error, "error response does not read back")
        _ = error.description
    }
    return 0
}
