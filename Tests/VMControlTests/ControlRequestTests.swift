import Testing
import VMControl
import VMDefinition

@Suite struct ControlRequestTests {
    func parse(_ s: String) throws(ControlError) -> ControlRequest { try ControlRequest(line: Array(s.utf8)) }

    func invalid(_ s: String) -> ControlError? {
        do { _ = try parse(s); return nil } catch { return error }
    }

    @Test func everyOp() throws {
        #expect(try parse(#"{"op":"status"}"#) == .status)
        #expect(try parse(#"{"op":"pause"}"#) == .pause)
        #expect(try parse(#"{"op":"resume"}"#) == .resume)
        #expect(try parse(#"{"op":"kill"}"#) == .kill)
        #expect(try parse(#"{"op":"reboot"}"#) == .reboot)
        #expect(try parse(#"{"op":"stats"}"#) == .stats)
        #expect(try parse(#"{"op":"events"}"#) == .events)
        #expect(try parse(#"{"op":"stop"}"#) == .stop(timeoutSeconds: 10))
        #expect(try parse(#" {"op":"stop","timeout_s":3} "#) == .stop(timeoutSeconds: 3))
        #expect(try parse(#"{"op":"console"}"#) == .console(replay: true))
        #expect(try parse(#"{"op":"console","replay":false}"#) == .console(replay: false))
        #expect(try parse(#"{"op":"logs"}"#) == .logs(follow: false))
        #expect(try parse(#"{"op":"logs","follow":true}"#) == .logs(follow: true))
    }

    @Test func roundTrip() throws {
        let all: [ControlRequest] = [.status, .pause, .resume, .kill, .reboot, .stats, .events, .stop(timeoutSeconds: 0),
                                     .stop(timeoutSeconds: 86400), .console(replay: true), .console(replay: false),
                                     .logs(follow: true), .logs(follow: false)]
        for r in all { #expect(try ControlRequest(line: r.json.encodedBytes) == r) }
    }

    @Test func errorsNameTheField() {
        #expect(invalid(#"{"op":"stop","timeout_s":-1}"#) == ControlError(.invalid, "-1 is out of range (0 to 86400 seconds)", field: "timeout_s"))
        #expect(invalid(#"{"op":"stop","timeout_s":"5"}"#)?.field == "timeout_s")
        #expect(invalid(#"{"op":"stop","timeout_s":1.5}"#)?.field == "timeout_s")
        #expect(invalid(#"{"op":"status","verbose":true}"#) == ControlError(.invalid, "unknown field", field: "verbose"))
        #expect(invalid(#"{"op":"console","replay":1}"#)?.field == "replay")
        #expect(invalid(#"{"op":"frobnicate"}"#)?.field == "op")
        #expect(invalid(#"{"op":7}"#)?.field == "op")
        #expect(invalid(#"{}"#) == ControlError(.invalid, "missing", field: "op"))
        // Not an object, not JSON, two values, empty: invalid, no field.
        for bad in [#"["status"]"#, #"{"op":"status""#, #"{"op":"status"}{}"#, "", "\u{0}"] {
            let e = invalid(bad)
            #expect(e?.kind == .invalid, "\(bad.debugDescription)")
        }
        #expect(invalid(#"{"op":"status","op":"pause"}"#)?.kind == .invalid)  // duplicate key
    }

    @Test func errorResponseShape() throws {
        let e = ControlError(.conflict, "cannot pause a VM that is paused")
        let v = try JSONValue(parsing: e.response.encodedBytes)
        #expect(v["ok"] == .bool(false))
        #expect(v["error"]?["kind"] == .string("conflict"))
        #expect(v["error"]?["field"] == nil)
        #expect(ControlError(response: v) == e)
        let withField = ControlError(.invalid, "unknown field", field: "x")
        #expect(ControlError(response: withField.response) == withField)
        #expect(controlOK([("state", .string("running"))]).encoded == #"{"ok":true,"state":"running"}"#)
        #expect(controlOK().line.last == 0x0A)
    }
}
