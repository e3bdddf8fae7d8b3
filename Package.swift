// swift-tools-version:6.0
import PackageDescription

// The VMM links statically and avoids Foundation on the run path: a per-VM process
// should start in a few ms and stay under ~5 MiB (see shared docs, swift-costs.md).
let package = Package(
    name: "pvmm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pvmm", targets: ["pvmm"]),
        .executable(name: "pvmm-vmm", targets: ["pvmm-vmm"]),
        .executable(name: "pvmmd", targets: ["pvmmd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // The daemon's HTTP server only (pvmmd): never linked into pvmm or pvmm-vmm.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // Thin ioctl wrappers: a value or -errno, no logic.
        .target(name: "CKVM"),
        // liburing (Debian's liburing-dev) for the block backend's parallel host I/O: a
        // value or -errno per wrapper, as CKVM. Static in pvmm-vmm (liburing.a).
        .target(name: "CURing", linkerSettings: [.linkedLibrary("uring")]),
        // libseccomp (Debian's libseccomp-dev): builds and loads the BPF filters; the
        // policy is Sandbox/SyscallTable.swift. Static in pvmm-vmm (libseccomp.a).
        .target(name: "CSeccomp", linkerSettings: [.linkedLibrary("seccomp")]),
        // The jail's namespace, mount and credential calls (pvmm run --jail).
        .target(name: "CJail"),
        // The VMM's sandbox: seccomp filters per thread role and the jail.
        .target(name: "Sandbox", dependencies: ["CSeccomp", "CJail", "VMDefinition"]),
        // Linux calls Swift cannot make cleanly (epoll, spawning a child that dies with us).
        .target(name: "CSys"),
        // tun/tap ioctls.
        .target(name: "CHostNet"),
        // Host network endpoints for virtio-net: taps, passt. Foundation-free, so the
        // daemon can open taps with it for unprivileged VMMs.
        .target(name: "HostNet", dependencies: ["CHostNet", "CSys", .product(name: "SystemPackage", package: "swift-system")]),
        // Constants shared with the guest kernel (compiled into guests/pvos too).
        .target(name: "PVMMABI"),
        // The VM definition and its one JSON codec: no dependencies, no Foundation, so the
        // VMM process, the daemon and the CLI all read and write the same format.
        .target(name: "VMDefinition"),
        .target(name: "GuestMemory", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "KVM", dependencies: ["CKVM", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "Boot", dependencies: ["GuestMemory", "PVMMABI"]),
        // The virtio spec as pure code: split queues, chains, MMIO registers. No threads, no KVM.
        .target(name: "Virtio", dependencies: ["GuestMemory"]),
        .target(name: "Devices", dependencies: ["CURing", "GuestMemory", "PVMMABI", "Virtio", "HostNet"]),
        // The lifecycle states and the control socket's protocol (docs/control.md), shared
        // by the VMM that serves it and its clients; no dependencies beyond the JSON codec.
        .target(name: "VMControl", dependencies: ["VMDefinition"]),
        // The snapshot format (docs/snapshot.md): container with per-section CRC-32 and
        // the VM state's codec. No files, no KVM calls: the fuzz target drives it alone.
        .target(name: "Snapshot", dependencies: ["CKVM", "KVM", "Virtio", "VMDefinition"]),
        .target(name: "VMM", dependencies: ["VMDefinition", "VMControl", "Snapshot", "KVM", "GuestMemory", "Boot", "Devices", "PVMMABI", "Virtio", "CSys", "HostNet", "Sandbox"]),
        // The user-facing CLI. `pvmm run` validates its flags, then execs pvmm-vmm.
        .executableTarget(
            name: "pvmm",
            dependencies: ["VMM", "Devices", "DaemonClient", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            // Static in release (Scripts/build adds --static-swift-stdlib, which the
            // FoundationEssentials it pulls in needs): no dynamic loading of the runtime
            // saves ~1.7 ms of every `pvmm run` before the VMM process even starts.
            linkerSettings: [.unsafeFlags(["-static-executable"], .when(configuration: .release))]
        ),
        // The per-VM VMM process: no ArgumentParser, no Foundation, linked as a static
        // executable, so its own memory stays ~3 MiB (ArgumentParser pulls in
        // FoundationEssentials: ~7 MiB resident just to start).
        .executableTarget(
            name: "pvmm-vmm",
            dependencies: ["VMM", "CKVM", "Sandbox", "HostNet"],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        // The daemon: registry and state machine, persistence, supervision of VMM processes,
        // the VMM control-socket client, the HTTP API on Hummingbird (docs/api.md).
        .target(name: "CSupervise"),
        // The client side of the API for `pvmm ls|create|console|...`: blocking HTTP/1.1 and
        // WebSocket over the Unix socket, no Foundation and no NIO, so the CLI stays light.
        // It also holds PVMMVersion, which pvmm and pvmmd both report: `gitRevision` for
        // `--version` and /v1/version is generated before every build.
        .target(name: "DaemonClient", dependencies: ["VMDefinition"], plugins: ["GitRevision"]),
        .target(
            name: "Daemon",
            dependencies: [
                "VMDefinition", "VMControl", "CSupervise", "CSys", "HostNet", "DaemonClient", "Snapshot", "Sandbox",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("openapi.json")]
        ),
        // The daemon: Hummingbird over a Unix socket (see docs/api.md). Its own executable,
        // which `pvmm daemon` execs, so the server libraries never load for `pvmm run`.
        .executableTarget(
            name: "pvmmd",
            dependencies: ["Daemon"]
        ),
        // pvos's network wire formats (guests/pvos/wire/NetWire.swift, compiled into the guest
        // too), built for the host so its parsers get unit tests and a libFuzzer target.
        .target(name: "PvosNetWire", path: "guests/pvos/wire"),
        .testTarget(name: "PvosNetWireTests", dependencies: ["PvosNetWire"]),
        // pvos's timer list (guests/pvos/timers), likewise.
        .target(name: "PvosTimers", path: "guests/pvos/timers"),
        .testTarget(name: "PvosTimersTests", dependencies: ["PvosTimers"]),
        .plugin(name: "GitRevision", capability: .buildTool()),
        .testTarget(name: "VMDefinitionTests", dependencies: ["VMDefinition"]),
        .testTarget(name: "DaemonClientTests", dependencies: ["DaemonClient"]),
        .testTarget(name: "DaemonTests", dependencies: ["Daemon", "VMDefinition", "VMControl"]),
        .testTarget(name: "VMControlTests", dependencies: ["VMControl", "VMDefinition"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "GuestMemory", "PVMMABI"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "GuestMemory", "Virtio", "HostNet"]),
        .testTarget(name: "HostNetTests", dependencies: ["HostNet"]),
        .testTarget(name: "SnapshotTests", dependencies: ["Snapshot", "KVM", "CKVM", "Virtio", "VMDefinition"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory"]),
        // Test guests (TinyELF) for the suites that boot VMs.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "Devices", "KVM", "PVMMABI", "TestSupport"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CSeccomp"]),
        .testTarget(name: "IntegrationTests", dependencies: ["VMM", "KVM", "PVMMABI", "TestSupport", "CSys"]),
    ]
)
