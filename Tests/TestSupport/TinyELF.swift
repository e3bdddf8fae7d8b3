/// Shared by IntegrationTests and VMMTests.
///
/// Builds minimal guest kernels for tests that need a guest to misbehave in one precise
/// way (triple fault, reset, bad placement): an ELF64 with one PT_LOAD holding `code`
/// at `address` and a PT_NOTE with the PVMM 64-bit entry note pointing at it.
public enum TinyELF {
    public static func make(code: [UInt8], address: UInt64 = 0x10_0000, memorySize: UInt64? = nil) -> [UInt8] {
        var note: [UInt8] = []
        note += le32(5) + le32(8) + le32(1) + Array("PVMM\0".utf8) + [0, 0, 0] + le64(address)
        let phoff = 64, phnum = 2, codeOffset = 0x1000
        let noteOffset = codeOffset + code.count
        var f: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        f += le16(2) + le16(62) + le32(1) + le64(address) + le64(UInt64(phoff)) + le64(0)
        f += le32(0) + le16(64) + le16(56) + le16(UInt16(phnum)) + le16(64) + le16(0) + le16(0)
        // PT_LOAD (RX) then PT_NOTE
        f += le32(1) + le32(5) + le64(UInt64(codeOffset)) + le64(address) + le64(address)
        f += le64(UInt64(code.count)) + le64(memorySize ?? UInt64(code.count)) + le64(0x1000)
        f += le32(4) + le32(4) + le64(UInt64(noteOffset)) + le64(0) + le64(0)
        f += le64(UInt64(note.count)) + le64(UInt64(note.count)) + le64(4)
        f += [UInt8](repeating: 0, count: codeOffset - f.count)
        return f + code + note
    }

    static func le16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    // Hand-assembled x86-64.
    public static let ud2: [UInt8] = [0x0F, 0x0B]                               // no IDT yet: triple fault
    public static let i8042Reset: [UInt8] = [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD] // mov al,0xfe; out 0x64,al; hlt; jmp
    public static func sysctl(_ status: UInt32) -> [UInt8] {
        [0xB8] + le32(status) + [0xE7, 0xF4, 0xF4, 0xEB, 0xFD]              // mov eax,s; out 0xf4,eax; hlt; jmp
    }
    /// Writes "ok\n" to COM1, then powers off with 0.
    public static let hello: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x6F, 0xEE, 0xB0, 0x6B, 0xEE, 0xB0, 0x0A, 0xEE] + sysctl(0)
    /// `cli; hlt` forever: a vCPU that sleeps in KVM's in-kernel LAPIC and never exits.
    public static let haltForever: [UInt8] = [0xFA, 0xF4, 0xEB, 0xFD]                  // cli; hlt; jmp hlt
    /// `jmp .`: spins without ever exiting.
    public static let spin: [UInt8] = [0xEB, 0xFE]
}
