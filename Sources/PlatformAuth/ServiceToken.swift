// The token a service presents when it calls another (the restaurant service calling the order
// service's RecordRestaurantDecision): read from a file, and read again when the file changes,
// so an operator (or Kubernetes, rotating a Secret) can replace it without a restart. The file
// is checked at most once a second.
import FoundationEssentials
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

extension String {
    var trimmingWhitespace: String {
        let scalars = unicodeScalars.drop { $0.properties.isWhitespace }.reversed().drop { $0.properties.isWhitespace }.reversed()
        return String(String.UnicodeScalarView(scalars))
    }
}
