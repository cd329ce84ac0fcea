// The token a service presents when it calls another (the restaurant service calling the order
// service's RecordRestaurantDecision, the order service reading a menu): read from a file, and
// read again when the file changes, so an operator (or Kubernetes, rotating a Secret) can replace
// it without a restart. The file is checked at most once a second.
//
// PeerService holds what every such call does the same way: the caller's deadline bounds it, the
// token goes with it, and the peer's failure becomes a status of our own, so that a client of
// one service never gets another service's internals, or a wrong code, back.
import FoundationEssentials
import Logging
import RPCCore
import Synchronization

/// A bearer token kept in a file.
public final class ServiceTokenFile: Sendable {
    public let path: String
    private let state = Mutex<(token: String?, modified: Date?, checked: ContinuousClock.Instant?)>((nil, nil, nil))

    public init(path: String) { self.path = path }

    /// The token as the file holds it now (surrounding white space dropped); nil when unreadable.
    public func token() -> String? {
        let now = ContinuousClock.now
        return state.withLock { state in
            if let checked = state.checked, now - checked < .seconds(1) { return state.token }
            state.checked = now
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date else {
                return state.token
            }
            if modified != state.modified, let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let token = text.trimmingWhitespace
                state.modified = modified
                state.token = token.isEmpty ? nil : token
            }
            return state.token
        }
    }

    /// Call options carrying the token, on top of `options`.
    public func authorize(_ options: CallOptions) -> CallOptions {
        guard let token = token() else { return options }
        var options = options
        options.metadata.add("authorization", "Bearer \(token)")
        return options
    }
}

/// Another platform service this one calls.
public struct PeerService: Sendable {
    /// As messages name it: "the order service".
    public let name: String
    private let token: ServiceTokenFile?
    private let logger: Logger

    /// `token` is presented on every call, when the peer requires one.
    public init(name: String, token: ServiceTokenFile?, logger: Logger) {
        self.name = name
        self.token = token
        self.logger = logger
    }

    /// The options of a call made while serving `context`: its deadline (10 s without one) and
    /// the token.
    public func options(for context: ServerContext) -> CallOptions {
        let options = CallOptions(timeout: context.deadline.map { $0 - .now } ?? .seconds(10))
        return token?.authorize(options) ?? options
    }

    /// What to answer our caller when the peer failed with `error`: the codes in `passing` (the
    /// caller's own mistakes, as the peer judged them) unchanged; the peer down or refusing our
    /// credentials as UNAVAILABLE (the caller did nothing wrong, and nothing changed); a deadline
    /// that ran out while we waited as DEADLINE_EXCEEDED; anything else as INTERNAL.
    public func failure(_ error: RPCError, passing: Set<StatusCode>) -> RPCError {
        if passing.contains(error.code) { return error }
        switch error.code {
        case .unavailable:
            logger.error("\(name) unreachable", metadata: ["error": "\(error)"])
            return RPCError(.unavailable, "\(name) is unavailable: \(error.message)")
        case .deadlineExceeded:
            return RPCError(.deadlineExceeded, "\(name) did not answer in time")
        case .unauthenticated, .permissionDenied:
            logger.error("\(name) refused our service token", metadata: ["error": "\(error)"])
            return RPCError(.unavailable, "\(name) refused this service's credentials: \(error.message)")
        default:
            logger.error("\(name) failed", metadata: ["error": "\(error)"])
            return RPCError(.internal, "\(name) failed: \(error)")
        }
    }
}

extension String {
    var trimmingWhitespace: String {
        let scalars = unicodeScalars.drop { $0.properties.isWhitespace }.reversed().drop { $0.properties.isWhitespace }.reversed()
        return String(String.UnicodeScalarView(scalars))
    }
}
