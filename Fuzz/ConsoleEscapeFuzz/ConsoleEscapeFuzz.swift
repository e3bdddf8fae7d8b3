// libFuzzer entry for the Ctrl-A escape keys (VMM/ConsoleEscape.swift, compiled straight
// into this harness: it has no dependencies). Arbitrary typed bytes go through the state
// machine; an independent model of the rules (a byte is sent unless it is Ctrl-A; after
// Ctrl-A, x/X stops, h/H helps, Ctrl-A sends one Ctrl-A, anything else sends both) must
// give the same bytes to the guest and the same commands, and no typed byte other than
// an escape command may be lost. Built and run by Scripts/fuzz-escape.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConsoleEscape(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    var escape = ConsoleEscape()
    var sent: [UInt8] = [], expected: [UInt8] = []
    var commands = 0, expectedCommands = 0
    var afterPrefix = false
    for byte in input {
        switch escape.feed(byte) {
        case .none: break
        case .send(let b): sent.append(b)
        case .sendPrefixAnd(let b): sent += [ConsoleEscape.prefix, b]
        case .stop, .help: commands += 1
        }
        if afterPrefix {
            afterPrefix = false
            switch byte {
            case 0x78, 0x58, 0x68, 0x48: expectedCommands += 1
            case ConsoleEscape.prefix: expected.append(byte)
            default: expected += [ConsoleEscape.prefix, byte]
            }
        } else if byte == ConsoleEscape.prefix {
            afterPrefix = true
        } else {
            expected.append(byte)
        }
        precondition(sent == expected, "guest bytes differ from the model")
        precondition(commands == expectedCommands, "commands differ from the model")
    }
    precondition(sent.count + 2 * commands + (afterPrefix ? 1 : 0) >= input.count - input.filter { $0 == 1 }.count)
    return 0
}
