import SystemPackage

/// A failed KVM operation: which one, and the errno the kernel gave.
public struct KVMError: Error, Equatable, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Errno

    public init(_ operation: String, _ errno: Errno) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(errno)" }
}

/// Turns a `ckvm_*` result (value or -errno) into a value or a typed error.
/// EINTR is not retried here: for KVM_RUN it is meaningful (a kick).
@inline(__always)
func check(_ result: Int32, _ operation: @autoclosure () -> String) throws(KVMError) -> Int32 {
    if result < 0 { throw KVMError(operation(), Errno(rawValue: -result)) }
    return result
}
