// One error type for everything a Redis call can end with, thrown as a typed error so callers
// switch on `kind` without casting. The split matters to the service layer: `.unavailable` and
// `.timeout` mean "Redis is not there right now" (gRPC UNAVAILABLE, retry later), while `.server`
// and `.authentication` are answers from a working server (a bug or a misconfiguration).
// `.notReplicated` is the odd one: the write happened, only its copies are missing (see WAIT).

/// Why a Redis call failed, and against which server.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// No usable connection: cannot connect, connection lost, or the client is closed.
        /// Raised at once while Redis is down; the client keeps reconnecting in the background.
        case unavailable
        /// No reply within `commandTimeout` (or no subscription confirmation in time).
        case timeout
        /// Redis answered with an error reply (WRONGTYPE, NOSCRIPT, EXECABORT, NOAUTH...).
        case server(String)
        /// AUTH or SELECT was refused while connecting (e.g. WRONGPASS): a configuration problem.
        case authentication(String)
        /// A write ran on the master but fewer than `waitReplicas` replicas acknowledged it within
        /// `waitTimeout` (WAIT). It is not undone: it may be lost if the master dies before a
        /// replica has it. Transient: retrying an idempotent write is safe.
        case notReplicated(acknowledged: Int)
    }

    public let kind: Kind
    /// The server as "host:port".
    public let endpoint: String
    /// What happened, for logs.
    public let detail: String

    public init(_ kind: Kind, endpoint: String, detail: String) {
        self.kind = kind
        self.endpoint = endpoint
        self.detail = detail
    }

    /// True for `.unavailable`, `.timeout` and `.notReplicated`: Redis may well work (or catch up)
    /// again later.
    public var isTransient: Bool {
        switch kind {
        case .unavailable, .timeout, .notReplicated: true
        case .server, .authentication: false
        }
    }

    public var description: String {
        switch kind {
        case .unavailable: "Redis at \(endpoint) unavailable: \(detail)"
        case .timeout: "Redis at \(endpoint) timed out: \(detail)"
        case .server(let message): "Redis at \(endpoint) replied with error: \(message)"
        case .authentication(let message): "Redis at \(endpoint) refused authentication: \(message)"
        case .notReplicated(let acknowledged): "Redis at \(endpoint) wrote but only \(acknowledged) replicas acknowledged: \(detail)"
        }
    }
}
