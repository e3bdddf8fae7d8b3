import HostNet
import VMDefinition
#if canImport(Glibc)
import Glibc
#endif

/// Opens (or creates) the tap devices a definition names, in the daemon, which has
/// CAP_NET_ADMIN: the VMM is given each as an inherited fd (`{"fd": N}`) and never needs
/// the capability itself (HostNet's Tap is the same code `pvmm run` uses for `tap=`).
public struct TapOpener: Sendable {
    public init() {}

    /// The fds a VMM inherits start here: 0-2 are stdio, 3 carries the definition.
    public static let firstFD: Int32 = 4

    /// The definition the VMM is given (tap nets replaced by fd nets numbered from
    /// `firstFD` in order) and the open taps, whose fds `spawnVMM` hands over. The daemon's
    /// copies close when the taps are dropped after the spawn; a tap the daemon created
    /// lives as long as the VMM holds it.
    public func handOver(_ config: VMConfig) throws(APIError) -> (VMConfig, [Tap]) {
        var out = config
        var taps: [Tap] = []
        for (i, net) in config.nets.enumerated() {
            guard case .tap(let name) = net.backend else { continue }
            let tap: Tap
            do { tap = try Tap.open(name: name) } catch {
                switch error {
                case .tapNameInvalid, .tapMissingNoPermission, .tapNotPermitted:
                    throw APIError(.badRequest, error.description, field: "nets[\(i)].tap")
                case .tap(_, "TUNSETIFF", let e) where e.rawValue == EBUSY:
                    throw APIError(.conflict, "tap \(name) is in use (another VM or program holds it)", field: "nets[\(i)].tap")
                default:
                    throw APIError(.internalServerError, error.description, field: "nets[\(i)].tap")
                }
            }
            out.nets[i].backend = .fd(Self.firstFD + Int32(taps.count))
            taps.append(tap)
        }
        return (out, taps)
    }

    /// Create-time checks: an `fd` means nothing to the daemon (its fds are not the
    /// caller's), so only tap and passt nets are accepted.
    public static func check(_ config: VMConfig) throws(APIError) {
        for (i, net) in config.nets.enumerated() {
            if case .fd = net.backend {
                throw APIError(.badRequest, "an fd net is for `pvmm run`; give the daemon a tap (it opens it) or passt",
                               field: "nets[\(i)].fd")
            }
        }
    }
}
