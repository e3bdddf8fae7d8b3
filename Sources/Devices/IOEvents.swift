/// Readiness of a host fd, as a device's event loop reports it and a backend asks for it.
public struct IOEvents: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = IOEvents(rawValue: 1)
    public static let writable = IOEvents(rawValue: 2)
    /// The peer hung up or the fd failed (always reported, whatever the interest).
    public static let hangup = IOEvents(rawValue: 4)
    public static let error = IOEvents(rawValue: 8)
}

/// Lets a backend change which events of its host fds wake its device thread (for
/// virtio-net: stop watching the tap for input while the guest has posted no receive
/// buffers; watch for writable while a full socket holds transmits back). Called only on
/// the device thread.
public protocol IOInterest: AnyObject, Sendable {
    func setInterest(_ fd: Int32, _ events: IOEvents)
    /// Stops watching `fd` altogether (its peer hung up: epoll would report that forever).
    func remove(_ fd: Int32)
}
