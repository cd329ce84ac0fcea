// Thin, non-blocking TCP socket calls over Glibc, so the layers above never touch sockaddr or
// errno. Every descriptor made here is non-blocking and close-on-exec; sends use MSG_NOSIGNAL, so
// a peer that vanished is an error result, never a SIGPIPE.
import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// A failed socket call, with the errno text.
public struct SocketError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let code: Int32
    public init(_ operation: String, code: Int32 = errno) {
        self.operation = operation
        self.code = code
    }
    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// The outcome of a non-blocking read or write.
public enum IOResult: Equatable {
    case transferred(Int)
    case wouldBlock
    case closed
    case failed(Int32)
}

/// Non-blocking TCP socket operations.
public enum Socket {
    /// Binds and listens on `host:port` (IPv4 or IPv6, port 0 picks a free one).
    /// Returns the descriptor and the port actually bound.
    public static func listen(host: String, port: Int, backlog: Int32 = 1024) throws(SocketError) -> (fd: Int32, port: Int) {
        let addresses = try resolve(host: host, port: port, passive: true)
        var lastError = SocketError("bind \(host):\(port)", code: EADDRNOTAVAIL)
        for address in addresses {
            let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = SocketError("socket"); continue }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let bound = address.bytes.withUnsafeBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if bound != 0 || Glibc.listen(fd, backlog) != 0 {
                lastError = SocketError("bind \(host):\(port)")
                Glibc.close(fd)
                continue
            }
            return (fd, localPort(fd))
        }
        throw lastError
    }

    /// What `accept` found.
    public enum Accepted: Equatable {
        case connection(Int32)
        /// Nothing pending (or a connection that vanished before we took it).
        case none
        /// The process or system is out of descriptors: the connection stays queued, so the
        /// caller must stop watching the listener for a while or it will be woken forever.
        case outOfDescriptors
    }

    /// Accepts one pending connection as a non-blocking socket with TCP_NODELAY.
    public static func accept(_ listener: Int32) -> Accepted {
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { return errno == EMFILE || errno == ENFILE ? .outOfDescriptors : .none }
        configureConnected(fd)
        return .connection(fd)
    }

    /// Accepts one pending connection as `accept` does, with the peer's address.
    public static func acceptWithPeer(_ listener: Int32) -> (Accepted, PeerAddress) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(listener, $0, &length) }
        }
        guard fd >= 0 else {
            return (errno == EMFILE || errno == ENFILE ? .outOfDescriptors : .none, PeerAddress())
        }
        configureConnected(fd)
        return (.connection(fd), PeerAddress(storage))
    }

    /// Starts a non-blocking connect to the first address of `host:port` that accepts a socket.
    /// Completion is signalled by writability; `connectResult` then tells success or failure.
    public static func connect(host: String, port: Int) throws(SocketError) -> Int32 {
        // IPv4 first: "localhost" often resolves to ::1 first, while servers commonly listen on
        // 0.0.0.0 only, and a refused non-blocking connect is only seen after this returns.
        let addresses = try resolve(host: host, port: port, passive: false).sorted { $0.family == AF_INET && $1.family != AF_INET }
        var lastError = SocketError("connect \(host):\(port)", code: ECONNREFUSED)
        for address in addresses {
            let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = SocketError("socket"); continue }
            let result = address.bytes.withUnsafeBytes {
                Glibc.connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if result == 0 || errno == EINPROGRESS {
                configureConnected(fd)
                return fd
            }
            lastError = SocketError("connect \(host):\(port)")
            Glibc.close(fd)
        }
        throw lastError
    }

    /// After a non-blocking connect signalled writability: nil on success, else the error.
    public static func connectResult(_ fd: Int32) -> SocketError? {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        return code == 0 ? nil : SocketError("connect", code: code)
    }

    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
        if count > 0 { return .transferred(count) }
        if count == 0 { return .closed }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? .wouldBlock : .failed(errno)
    }

    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> IOResult {
        let count = send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
        if count >= 0 { return .transferred(count) }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? .wouldBlock : .failed(errno)
    }

    /// Reads what is available (up to `limit` bytes) onto the end of `bytes`.
    public static func read(_ fd: Int32, appendingTo bytes: inout [UInt8], limit: Int = 4096) -> IOResult {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: limit))
        let result = bytes.withUnsafeMutableBytes { read(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        let kept = if case .transferred(let count) = result { count } else { 0 }
        bytes.removeLast(limit - kept)
        return result
    }

    /// Writes `bytes` from `offset` on, as much as the socket takes now.
    public static func write(_ fd: Int32, _ bytes: [UInt8], from offset: Int) -> IOResult {
        bytes.withUnsafeBytes { write(fd, from: UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }

    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    public static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return withUnsafeBytes(of: &storage) { raw -> Int in
            // sin_port and sin6_port sit at the same offset, in network byte order.
            Int(UInt16(raw[2]) << 8 | UInt16(raw[3]))
        }
    }

    private static func configureConnected(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    private struct ResolvedAddress {
        let family: Int32
        let bytes: [UInt8]
    }

    private static func resolve(host: String, port: Int, passive: Bool) throws(SocketError) -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let name = host.isEmpty ? nil : host
        let status = getaddrinfo(name, String(port), &hints, &list)
        guard status == 0, let list else {
            throw SocketError("resolve \(host): \(String(cString: gai_strerror(status)))", code: EHOSTUNREACH)
        }
        defer { freeaddrinfo(list) }
        var result: [ResolvedAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let entry = cursor {
            let bytes = UnsafeRawBufferPointer(start: entry.pointee.ai_addr, count: Int(entry.pointee.ai_addrlen))
            result.append(ResolvedAddress(family: entry.pointee.ai_family, bytes: Array(bytes)))
            cursor = entry.pointee.ai_next
        }
        return result
    }
}

/// A peer's IP address (not its port): IPv4 as IPv4-mapped IPv6, so one key space holds both.
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    private let high: UInt64
    private let low: UInt64

    /// The unspecified address (::), for a peer whose address is unknown.
    public init() {
        high = 0
        low = 0
    }

    init(_ storage: sockaddr_storage) {
        var bytes = [UInt8](repeating: 0, count: 16)
        var copy = storage
        withUnsafeBytes(of: &copy) { raw in
            if storage.ss_family == sa_family_t(AF_INET) {
                // sin_addr follows the family and the port.
                bytes[10] = 0xff
                bytes[11] = 0xff
                for index in 0..<4 { bytes[12 + index] = raw[4 + index] }
            } else if storage.ss_family == sa_family_t(AF_INET6) {
                // sin6_addr follows the family, the port and the flow label.
                for index in 0..<16 { bytes[index] = raw[8 + index] }
            }
        }
        high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var description: String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<8 {
            bytes[index] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(index)))
            bytes[8 + index] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(index)))
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let isMappedIPv4 = high == 0 && low >> 32 == 0xffff
        let family = isMappedIPv4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, isMappedIPv4 ? raw.baseAddress! + 12 : raw.baseAddress!, &text, socklen_t(text.count)) != nil
        }
        return ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
}

/// Makes a vanished peer a write error instead of a process-killing signal.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}
