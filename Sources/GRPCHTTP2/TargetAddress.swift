// How a target is written everywhere on the platform (flags, ORDER_SERVICE_ADDR, test-client):
// `host:port`, with an IPv6 host in brackets (`[::1]:50051`).

/// A `host:port` address of a gRPC server.
public struct TargetAddress: Sendable, Equatable, CustomStringConvertible {
    /// The text is not `host:port` with a port from 1 to 65535.
    public struct ParseError: Error, CustomStringConvertible {
        public let text: String
        public var description: String { "address must be host:port, got \(text)" }
    }

    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws(ParseError) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(after: close)...].dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        } else {
            throw ParseError(text: text)
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (1...65535).contains(port) else { throw ParseError(text: text) }
        self.init(host: String(hostPart), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
