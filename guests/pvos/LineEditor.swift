// The shell's line editor: insert anywhere, Left/Right, Home/End, Up/Down through a short
// history, BS/DEL/Delete, Ctrl-U (erase the line), Ctrl-C (cancel the line), on any
// terminal. It only ever writes printable bytes, BS and spaces (a BS moves the cursor
// left, reprinting moves it right), so it needs nothing from the terminal but a cursor.
// Input comes from Console.waitByte, one byte at a time: bytes after a newline stay in
// the device for the next line, so piped input is never dropped.

enum LineEditor {
    /// Longest line the shell takes; a longer one is refused whole (running a cut
    /// command could do something the user never asked for, e.g. `blk write`).
    static let maxLine = 256
    static let historySize = 16
    static var history: [[UInt8]] = []
    static var lastWasCR = false    // swallow the LF of a CR LF pair

    /// Where an escape sequence (VT100/xterm keys: ESC [ ... final, ESC O final) stands.
    enum Escape {
        case none
        case sawESC
        /// After ESC [ or ESC O: `parameter` is the first number (`ESC [ 3 ~` = Delete).
        case sequence(parameter: Int)
    }

    /// What an edit leaves on screen: the line and where the cursor is in it.
    struct Line {
        var bytes: [UInt8] = []
        var cursor = 0
        /// Bytes typed after the line was full: the line is refused at Enter.
        var overflow = 0

        mutating func insert(_ c: UInt8) {
            guard bytes.count < maxLine else { overflow += 1; return }
            bytes.insert(c, at: cursor)
            cursor += 1
            Console.lock()
            echo(bytes[(cursor - 1)...])
            back(bytes.count - cursor)
            Console.unlock()
        }

        /// Removes the byte at `at` (the cursor must be on it) and redraws the tail.
        mutating func remove(at i: Int) {
            bytes.remove(at: i)
            Console.lock()
            echo(bytes[i...])
            Console.put(32)
            back(bytes.count - i + 1)
            Console.unlock()
        }

        mutating func backspace() {
            guard cursor > 0 else { return }
            left()
            remove(at: cursor)
        }

        mutating func delete() {
            if cursor < bytes.count { remove(at: cursor) }
        }

        mutating func left() {
            guard cursor > 0 else { return }
            cursor -= 1
            Console.put(8)
        }

        mutating func right() {
            guard cursor < bytes.count else { return }
            Console.put(bytes[cursor])
            cursor += 1
        }

        mutating func home() {
            back(cursor)
            cursor = 0
        }

        mutating func end() {
            echo(bytes[cursor...])
            cursor = bytes.count
        }

        /// Shows `new` instead (history, Ctrl-U), the cursor at its end.
        mutating func replace(with new: [UInt8]) {
            Console.lock()
            home()
            Console.write(new)
            let extra = bytes.count - new.count
            for _ in 0..<max(extra, 0) { Console.put(32) }
            back(extra)
            Console.unlock()
            bytes = new
            cursor = new.count
            overflow = 0
        }

        func echo(_ s: ArraySlice<UInt8>) { for b in s { Console.put(b) } }
        func back(_ n: Int) { for _ in 0..<max(n, 0) { Console.put(8) } }
    }

    /// Reads a line with echo and editing. Ctrl-C and an overlong line give an empty one.
    static func readLine() -> [UInt8] {
        var line = Line()
        var escape = Escape.none
        var browse = history.count      // == history.count: the line being typed
        var draft: [UInt8] = []         // that line, while browsing the history
        while true {
            let c = Console.waitByte()
            switch escape {
            case .none: break
            case .sawESC:
                if c == 91 || c == 79 { escape = .sequence(parameter: 0); continue }   // [ or O
                escape = .none  // a lone ESC: dropped, the byte is a key of its own
            case .sequence(let p):
                if c >= 48 && c <= 57 { escape = .sequence(parameter: min(p * 10 + Int(c - 48), 1000)); continue }
                if c >= 0x20 && c < 0x40 { continue }     // more parameters, intermediates
                escape = .none
                if c >= 0x40 && c < 0x7F {
                    switch c {
                    case 65: browse = recall(&line, browse - 1, browse, &draft)    // A: Up
                    case 66: browse = recall(&line, browse + 1, browse, &draft)    // B: Down
                    case 67: line.right()                                          // C
                    case 68: line.left()                                           // D
                    case 72: line.home()                                           // H
                    case 70: line.end()                                            // F
                    case 126:                                                      // ~
                        if p == 1 || p == 7 { line.home() }
                        else if p == 4 || p == 8 { line.end() }
                        else if p == 3 { line.delete() }
                    default: break
                    }
                    continue
                }
                // A control byte inside a sequence: the sequence is abandoned, the byte kept.
            }
            if c == 10 && lastWasCR { lastWasCR = false; continue }
            lastWasCR = c == 13
            switch c {
            case 10, 13:
                Console.inputDone()
                Console.put(10)
                if line.overflow > 0 {
                    Console.write("line too long (")
                    Console.writeDecimal(UInt64(line.bytes.count + line.overflow))
                    Console.write(" bytes; the shell takes at most ")
                    Console.writeDecimal(UInt64(maxLine))
                    Console.write("): ignored\n")
                    return []
                }
                remember(line.bytes)
                return line.bytes
            case 3:   // Ctrl-C: cancel the line
                Console.inputDone()
                Console.write("^C\n")
                if line.bytes.isEmpty {
                    Console.write(Platform.underPVMM ? "(poweroff ends the VM; Ctrl-A x stops pvmm)\n" : "(poweroff ends the VM)\n")
                }
                return []
            case 27: escape = .sawESC
            case 8, 127: line.backspace()
            case 1: line.home()       // Ctrl-A (under pvmm: Ctrl-A Ctrl-A)
            case 5: line.end()        // Ctrl-E
            case 21: line.replace(with: [])   // Ctrl-U: erase the whole line
            default:
                if c >= 32 && c < 127 { line.insert(c) }
            }
        }
    }

    /// Shows history entry `to` (history.count: the draft) if there is one; returns the
    /// index now shown.
    static func recall(_ line: inout Line, _ to: Int, _ from: Int, _ draft: inout [UInt8]) -> Int {
        guard to >= 0 && to <= history.count && to != from else { return from }
        if from == history.count { draft = line.bytes }
        line.replace(with: to == history.count ? draft : history[to])
        return to
    }

    static func remember(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if let last = history.last, last == bytes { return }
        if history.count == historySize { history.removeFirst() }
        history.append(bytes)
    }
}
