import Testing
@testable import VMDefinition

@Suite struct JSONParsing {
    @Test func scalarsAndContainers() throws {
        #expect(try JSONValue(parsing: " null ") == .null)
        #expect(try JSONValue(parsing: "true") == .bool(true))
        #expect(try JSONValue(parsing: "-0.5e+3") == .number("-0.5e+3"))
        #expect(try JSONValue(parsing: "[1, [], {}]") == .array([.number("1"), .array([]), .object([])]))
        let o = try JSONValue(parsing: #"{"a": 1, "b": "x"}"#)
        #expect(o["a"]?.intValue == 1 && o["b"]?.stringValue == "x" && o["c"] == nil)
    }

    @Test func stringEscapes() throws {
        #expect(try JSONValue(parsing: #""a\"b\\c\/d\n\t\u00e9\ud83d\ude00""#) == .string("a\"b\\c/d\n\té😀"))
        #expect(try JSONValue(parsing: "\"h\u{e9}llo\"") == .string("héllo"))
    }

    @Test(arguments: [
        "", "   ", "nul", "tru", "01", "1.", "-", "1e", "+1", ".5", "[1,]", "[1 2]", "{\"a\":1,}", "{a:1}",
        "{\"a\" 1}", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
        "\"a\u{1}b\"", "1 2", "{\"a\":1,\"a\":2}", "[", "{", "NaN", "Infinity",
    ])
    func refusesInvalid(_ text: String) {
        #expect(throws: JSONError.self) { try JSONValue(parsing: text) }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: JSONError.self) { try JSONValue(parsing: [0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONError.self) { try JSONValue(parsing: [0x22, 0xFF, 0x22]) }
    }

    @Test func depthIsBounded() throws {
        let ok = String(repeating: "[", count: JSONValue.maxDepth) + String(repeating: "]", count: JSONValue.maxDepth)
        _ = try JSONValue(parsing: ok)
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONError.self) { try JSONValue(parsing: deep) }
    }

    @Test func errorsSayWhere() {
        do { _ = try JSONValue(parsing: #"{"a": tru}"#); Issue.record("parsed") } catch {
            #expect(error.offset == 6 && error.description.contains("true"))
        }
        do { _ = try JSONValue(parsing: #"{"a":1,"a":2}"#); Issue.record("parsed") } catch {
            #expect(error.message.contains("duplicate member 'a'"))
        }
    }

    @Test func encodeRoundTrips() throws {
        let v = JSONValue.object([
            ("s", .string("quote\" backslash\\ nl\n ctl\u{1} del\u{7f} é 😀")), ("n", .number("-12.5e3")),
            ("a", .array([.null, .bool(false), .int(Int.max), .int(Int.min)])), ("o", .object([])),
        ])
        #expect(try JSONValue(parsing: v.encoded) == v)
        #expect(JSONValue.string("a\u{1}").encoded == #""a\u0001""#)
    }

    @Test func integersStayExact() throws {
        let v = try JSONValue(parsing: "[9223372036854775807, 9223372036854775808, 1.0, 1e2]")
        guard case .array(let a) = v else { Issue.record("not an array"); return }
        #expect(a[0].intValue == Int.max)
        #expect(a[1].intValue == nil && a[2].intValue == nil && a[3].intValue == nil)
    }
}
