// Which kind of Redis deployment a client talks to, and the addresses it starts from. Plain
// values, so they sit in `RedisConfiguration` and can be parsed from environment variables
// ("host:port,host:port") by the service runtime.

/// One Redis server (or Sentinel) address.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Why a "host:port" text was refused.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let input: String
        public let reason: String
        public var description: String { "invalid Redis address \"\(input)\": \(reason) (expected host:port)" }
    }

    /// Parses "host:port"; an IPv6 host goes in brackets ("[::1]:6379").
    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingWhitespace
        guard let colon = trimmed.lastIndex(of: ":") else { throw ParseError(input: text, reason: "no port") }
        var host = Substring(trimmed[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw ParseError(input: text, reason: "no host") }
        guard let port = Int(trimmed[trimmed.index(after: colon)...]), (1...65535).contains(port) else {
            throw ParseError(input: text, reason: "the port must be a number from 1 to 65535")
        }
        self.init(host: String(host), port: port)
    }

    /// Parses a comma-separated list ("10.0.0.1:7000,10.0.0.2:7000"); an empty list or entry is
    /// an error, so a mistyped variable fails at start-up instead of at the first command.
    public static func list(parsing text: String) throws(ParseError) -> [RedisEndpoint] {
        let entries = text.split(separator: ",", omittingEmptySubsequences: false)
        guard !text.trimmingWhitespace.isEmpty else { throw ParseError(input: text, reason: "empty list") }
        var endpoints: [RedisEndpoint] = []
        for entry in entries {
            guard !entry.trimmingWhitespace.isEmpty else { throw ParseError(input: text, reason: "empty entry in the list") }
            endpoints.append(try RedisEndpoint(parsing: String(entry)))
        }
        return endpoints
    }

    /// "host:port", as error messages name a server.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How the servers of a deployment are found.
public enum RedisDeployment: Sendable, Equatable {
    /// One server at the configuration's `host` and `port`.
    case standalone
    /// A Redis Cluster: the slot map is learned from any of `seeds` and the other nodes are
    /// discovered from it. Commands go to the master of their key's slot.
    case cluster(seeds: [RedisEndpoint])
    /// A master watched by Redis Sentinel: its address is asked of `sentinels` (in order) before
    /// every connect and checked with ROLE, so a client follows a failover.
    case sentinel(sentinels: [RedisEndpoint], masterName: String)
}

extension StringProtocol {
    var trimmingWhitespace: Substring {
        let text = Substring(self)
        guard let first = text.firstIndex(where: { !$0.isWhitespace }) else { return "" }
        return text[first...text.lastIndex(where: { !$0.isWhitespace })!]
    }
}
