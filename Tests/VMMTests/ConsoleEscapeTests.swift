import Testing
import VMM

@Suite struct ConsoleEscapeTests {
    func feed(_ bytes: [UInt8]) -> [ConsoleEscape.Action] {
        var e = ConsoleEscape()
        return bytes.map { e.feed($0) }
    }

    @Test func ordinaryBytesPassThrough() {
        #expect(feed(Array("ax\r".utf8)) == [.send(0x61), .send(0x78), .send(0x0D)])
    }

    @Test func ctrlAThenXOrHIsACommand() {
        #expect(feed([0x01, 0x78]) == [.none, .stop])
        #expect(feed([0x01, 0x58]) == [.none, .stop])
        #expect(feed([0x01, 0x68, 0x68]) == [.none, .help, .send(0x68)])   // h only right after Ctrl-A
    }

    @Test func ctrlATwiceSendsOneAndOtherKeysKeepThePrefix() {
        #expect(feed([0x01, 0x01, 0x78]) == [.none, .send(0x01), .send(0x78)])
        #expect(feed([0x01, 0x71]) == [.none, .sendPrefixAnd(0x71)])
    }

    @Test func helpNamesEveryKey() {
        for key in ["x ", "h ", "Ctrl-A "] { #expect(ConsoleEscape.help.contains("  " + key)) }
    }
}
