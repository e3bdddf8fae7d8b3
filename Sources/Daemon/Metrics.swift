import VMControl
import VMDefinition

/// GET /metrics: every VM's state and counters in the Prometheus text exposition format
/// (version 0.0.4), one `vm` label per VM. Counters come from each running VMM's `stats`
/// (asked concurrently, each bounded by a short timeout so one wedged VMM cannot stall
/// the scrape).
enum Metrics {
    struct Family {
        let name: String, help: String, type: String
        var samples: [(labels: [(String, String)], value: String)] = []
    }

    static func prometheus(_ registry: Registry) async -> String {
        let names = await registry.names()
        var states: [(String, VMState)] = []
        var controls: [(String, String)] = []
        for n in names {
            guard let s = await registry.state(n) else { continue }
            states.append((n, s))
            if s.isActive { controls.append((n, VMPaths(stateDir: registry.stateDir, name: n).control)) }
        }
        let stats: [(String, JSONValue)] = await withTaskGroup(of: (String, JSONValue)?.self) { g in
            for (n, c) in controls {
                g.addTask {
                    guard let s = try? await ControlConnection.request(path: c, .stats, timeout: .seconds(1))
                    else { return nil }
                    return (n, s)
                }
            }
            var out: [(String, JSONValue)] = []
            for await r in g { if let r { out.append(r) } }
            return out.sorted { $0.0 < $1.0 }
        }
        var vmState = Family(name: "pvmm_vm_state", help: "1 for the state the VM is in.", type: "gauge")
        for (n, s) in states {
            for c in VMState.allCases { vmState.samples.append(([("vm", n), ("state", c.rawValue)], c == s ? "1" : "0")) }
        }
        var exits = Family(name: "pvmm_vm_exits_total", help: "Userspace exits of the VM's vCPUs, by reason.", type: "counter")
        var dev = [String: Family]()
        let deviceCounters = ["requests", "notifications", "interrupts", "errors", "bytes", "drops"]
        for c in deviceCounters {
            dev[c] = Family(name: "pvmm_vm_device_\(c)_total", help: "Per virtio device: \(c).", type: "counter")
        }
        var consoleBytes = Family(name: "pvmm_vm_console_bytes_total", help: "Bytes the guest wrote to its console.", type: "counter")
        var consoleDropped = Family(name: "pvmm_vm_console_dropped_total",
                                    help: "Console bytes a slow attached client skipped.", type: "counter")
        var consoleOverwritten = Family(name: "pvmm_vm_console_overwritten_total",
                                        help: "Console bytes overwritten in the ring (older than its 64 KiB).", type: "counter")
        for (n, s) in stats {
            if case .object(let m)? = s["exits"] {
                for (reason, v) in m { if case .number(let t) = v { exits.samples.append(([("vm", n), ("reason", reason)], t)) } }
            }
            if case .array(let devices)? = s["devices"] {
                for d in devices {
                    let device = d["name"]?.stringValue ?? "?"
                    for c in deviceCounters {
                        if case .number(let t)? = d[c] { dev[c]!.samples.append(([("vm", n), ("device", device)], t)) }
                    }
                }
            }
            if case .number(let t)? = s["console"]?["bytes"] { consoleBytes.samples.append(([("vm", n)], t)) }
            if case .number(let t)? = s["console"]?["dropped"] { consoleDropped.samples.append(([("vm", n)], t)) }
            if case .number(let t)? = s["console"]?["overwritten"] { consoleOverwritten.samples.append(([("vm", n)], t)) }
        }
        let families = [vmState, exits] + deviceCounters.map { dev[$0]! } + [consoleBytes, consoleDropped, consoleOverwritten]
        return families.map(render).joined()
    }

    static func render(_ f: Family) -> String {
        var out = "# HELP \(f.name) \(f.help)\n# TYPE \(f.name) \(f.type)\n"
        for s in f.samples {
            let labels = s.labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
            out += "\(f.name){\(labels)} \(s.value)\n"
        }
        return out
    }

    /// Label values escape backslash, double quote and newline (the text format's rule).
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
