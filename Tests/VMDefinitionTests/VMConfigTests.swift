import Testing
@testable import VMDefinition

@Suite struct VMConfigCodec {
    /// A definition with every field set to a non-default value.
    static let full = VMConfig(
        name: "web-1", kernel: "/k/vmlinux", initrd: "/k/initrd.cpio.gz", cmdline: "console=hvc0 quiet", memoryMiB: 512, cpus: 4,
        disks: [DiskConfig(path: "/d/a.img"), DiskConfig(path: "/d/b,c.img", readOnly: true, id: "data")],
        nets: [NetConfig(backend: .tap("tap0"), mac: MACAddress("52:54:00:12:34:56")), NetConfig(backend: .fd(7)),
               NetConfig(backend: .passt(socket: nil)), NetConfig(backend: .passt(socket: "/run/p.sock"), mac: MACAddress("02:00:00:00:00:01"))],
        console: .serial, irqProbe: true)

    @Test func roundTripCoversEveryField() throws {
        let c = Self.full
        let text = c.jsonString
        #expect(try VMConfig(json: Array(text.utf8)) == c)
        for key in ["name", "kernel", "initrd", "cmdline", "memory_mib", "cpus", "disks", "path", "readonly", "id", "nets", "tap", "fd",
                    "passt", "mac", "console", "irq_probe"] {
            #expect(text.contains("\"\(key)\":"), "\(key) missing from \(text)")
        }
        let minimal = VMConfig(kernel: "/k")
        #expect(try VMConfig(json: minimal.jsonBytes) == minimal)
        // No initrd: the key is absent (a state file says exactly what the VM is).
        #expect(!minimal.jsonString.contains("initrd"))
    }

    @Test func defaults() throws {
        let c = try VMConfig(json: Array(#"{"kernel": "/k"}"#.utf8))
        #expect(c == VMConfig(kernel: "/k"))
        #expect(c.memoryMiB == 128 && c.cpus == 1 && c.console == .virtio && c.name == nil && c.initrd == nil)
        #expect(try VMConfig(json: Array(#"{"kernel": "/k", "initrd": null}"#.utf8)) == c)
        #expect(try VMConfig(json: Array(#"{"kernel": "/k", "initrd": "/i"}"#.utf8)).initrd == "/i")
        // null is "absent" for optional fields.
        #expect(try VMConfig(json: Array(#"{"kernel": "/k", "name": null, "disks": null}"#.utf8)) == c)
    }

    static func error(_ json: String) -> ConfigError? {
        do { _ = try VMConfig(json: Array(json.utf8)); return nil } catch { return error }
    }

    @Test(arguments: [
        (#"{"kernel": "/k", "memory": 5}"#, "memory", "unknown field"),
        (#"{"kernel": "/k", "disks": [{"path": "/a"}, {"path": "/b", "ro": true}]}"#, "disks[1].ro", "unknown field"),
        (#"{"kernel": "/k", "cpus": "2"}"#, "cpus", "expected an integer, got a string"),
        (#"{"kernel": "/k", "cpus": 1.5}"#, "cpus", "not an integer"),
        (#"{"kernel": "/k", "memory_mib": 99999999999999999999}"#, "memory_mib", "not an integer"),
        (#"{"kernel": 3}"#, "kernel", "expected a string"),
        (#"{"kernel": "/k", "initrd": 3}"#, "initrd", "expected a string"),
        (#"{"kernel": "/k", "initrd": ["/i"]}"#, "initrd", "expected a string"),
        (#"{"kernel": "/k", "initrds": "/i"}"#, "initrds", "unknown field"),
        (#"{"cmdline": ""}"#, "kernel", "is required"),
        (#"{"kernel": "/k", "disks": {}}"#, "disks", "expected an array"),
        (#"{"kernel": "/k", "disks": [{"readonly": true}]}"#, "disks[0].path", "is required"),
        (#"{"kernel": "/k", "disks": [{"path": "/a", "readonly": "yes"}]}"#, "disks[0].readonly", "true or false"),
        (#"{"kernel": "/k", "disks": ["/a"]}"#, "disks[0]", "expected an object"),
        (#"{"kernel": "/k", "nets": [{}]}"#, "nets[0]", "needs one of"),
        (#"{"kernel": "/k", "nets": [{"tap": "t", "fd": 3}]}"#, "nets[0]", "only one"),
        (#"{"kernel": "/k", "nets": [{"tap": "t", "mac": "01:00:00:00:00:00"}]}"#, "nets[0].mac", "unicast"),
        (#"{"kernel": "/k", "nets": [{"fd": "3"}]}"#, "nets[0].fd", "file descriptor"),
        (#"{"kernel": "/k", "nets": [{"passt": false}]}"#, "nets[0].passt", "true or a socket path"),
        (#"{"kernel": "/k", "console": "vga"}"#, "console", "serial, virtio"),
        (#"[1]"#, "", "expected an object"),
        (#"{"kernel": "/k",}"#, "", "invalid JSON at byte"),
    ])
    func errorsNameTheField(_ json: String, _ field: String, _ message: String) {
        guard let e = Self.error(json) else { Issue.record("accepted \(json)"); return }
        #expect(e.field == field, "\(e)")
        #expect(e.message.contains(message), "\(e)")
    }

    @Test func validation() throws {
        func check(_ c: VMConfig) -> ConfigError? {
            do { try c.validate(hostMemoryMiB: 1024, hostMaxVCPUs: 8); return nil } catch { return error }
        }
        #expect(check(Self.full) == nil)
        #expect(check(VMConfig(kernel: "/k", memoryMiB: 4))?.field == "memory_mib")
        #expect(check(VMConfig(kernel: "/k", memoryMiB: 2048))?.message.contains("this host has 1024 MiB") == true)
        #expect(check(VMConfig(kernel: "/k", cpus: 9))?.message.contains("1 to 8") == true)
        #expect(check(VMConfig(kernel: "/k", cpus: 0))?.field == "cpus")
        #expect(check(VMConfig(name: "Bad_Name", kernel: "/k"))?.field == "name")
        #expect(check(VMConfig(name: "-x", kernel: "/k"))?.field == "name")
        #expect(check(VMConfig(name: String(repeating: "a", count: 64), kernel: "/k"))?.field == "name")
        #expect(check(VMConfig(name: String(repeating: "a", count: 63), kernel: "/k")) == nil)
        #expect(check(VMConfig(kernel: "/k", disks: [DiskConfig(path: "/a"), DiskConfig(path: "/a")]))?.field == "disks[1].path")
        #expect(check(VMConfig(kernel: "/k", disks: [DiskConfig(path: "/a", id: String(repeating: "x", count: 21))]))?.field == "disks[0].id")
        #expect(check(VMConfig(kernel: "/k", nets: [NetConfig(backend: .tap("a/b"))]))?.field == "nets[0].tap")
        #expect(check(VMConfig(kernel: "/k", nets: [NetConfig(backend: .tap(String(repeating: "t", count: 16)))]))?.field == "nets[0].tap")
        #expect(check(VMConfig(kernel: "/k", nets: [NetConfig(backend: .fd(-1))]))?.field == "nets[0].fd")
        #expect(check(VMConfig(kernel: "/k", cmdline: "a\u{0}b"))?.field == "cmdline")
        #expect(check(VMConfig(kernel: "/k", initrd: ""))?.field == "initrd")
        #expect(check(VMConfig(kernel: "/k", initrd: "/a\u{0}b"))?.field == "initrd")
        #expect(check(VMConfig(kernel: "/k", initrd: "/i")) == nil)
    }

    @Test func flagNames() {
        #expect(ConfigError(field: "memory_mib", message: "m").flagDescription == "--memory: m")
        #expect(ConfigError(field: "disks[2].id", message: "m").flagDescription == "--disk: m")
        #expect(ConfigError(field: "nets[0].mac", message: "m").flag == "--net")
        #expect(ConfigError(field: "irq_probe", message: "m").flag == "--irq-probe")
        #expect(ConfigError(field: "initrd", message: "m").flagDescription == "--initrd: m")
        #expect(ConfigError(field: "disks[2].id", message: "m").description == "disks[2].id: m")
    }
}

@Suite struct DeviceArguments {
    @Test func disk() throws {
        #expect(try DiskConfig(argument: "/a.img,readonly,id=x") == DiskConfig(path: "/a.img", readOnly: true, id: "x"))
        #expect(throws: ConfigError.self) { try DiskConfig(argument: ",readonly") }
        #expect(throws: ConfigError.self) { try DiskConfig(argument: "/a,rw") }
    }

    @Test func net() throws {
        let mac = MACAddress("52:54:00:ab:cd:ef")
        #expect(try NetConfig(argument: "tap=tap3,mac=52:54:00:AB:cd:ef") == NetConfig(backend: .tap("tap3"), mac: mac))
        #expect(try NetConfig(argument: "fd=5") == NetConfig(backend: .fd(5)))
        #expect(try NetConfig(argument: "passt") == NetConfig(backend: .passt(socket: nil)))
        #expect(try NetConfig(argument: "passt=/tmp/p.sock,mac=52-54-00-ab-cd-ef") == NetConfig(backend: .passt(socket: "/tmp/p.sock"), mac: mac))
        for bad in ["", "tap", "tap=", "fd=x", "fd=-2", "user", "tap=t,mac=zz", "tap=t,mtu=9000", "passt=", "tap=t,mac=03:00:00:00:00:00"] {
            #expect(throws: ConfigError.self, "\(bad)") { try NetConfig(argument: bad) }
        }
    }

    @Test func mac() {
        #expect(MACAddress("52:54:00:12:34:56")?.description == "52:54:00:12:34:56")
        #expect(MACAddress("52:54:00:12:34") == nil)
        #expect(MACAddress("52:54:00:12:34:5") == nil)
        #expect(MACAddress("52:54:00:12:34:567") == nil)
        #expect(MACAddress("ff:ff:ff:ff:ff:ff") == nil)
    }
}
