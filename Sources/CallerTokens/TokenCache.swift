// Verified tokens remembered until they expire: a client that reuses its token pays for one
// signature check, then a dictionary lookup per call. Bounded: when full, expired entries go
// first, then half of the rest (an attacker minting valid tokens can only make us verify more,
// never grow without limit). Refusals are not remembered; they are cheap to repeat up to the
// signature check, and the signature check is what a valid token would cost anyway.
import Synchronization

/// A `TokenVerifier` with a bounded cache of the tokens it accepted.
public final class TokenCache: Sendable {
    /// Tokens remembered at most.
    public static let capacity = 10_000

    private let verifier: TokenVerifier
    private let entries = Mutex<[String: TokenClaims]>([:])

    public init(verifier: TokenVerifier) { self.verifier = verifier }

    /// The claims of a valid token, from the cache when it was verified before and has not expired.
    public func claims(for token: String, now: Double) throws(TokenError) -> TokenClaims {
        try claims(forHeader: token, token: { token }, now: now)
    }

    /// The same, keyed by the whole header value the token came in (so a cached call allocates
    /// nothing); `token` extracts the token itself, only when it must be verified.
    public func claims(forHeader key: String, token: () -> String, now: Double) throws(TokenError) -> TokenClaims {
        if let cached = entries.withLock({ $0[key] }), cached.expiresAt + TokenVerifier.clockSkew > now {
            return cached
        }
        let claims = try verifier.verify(token(), now: now)
        let token = key
        entries.withLock { entries in
            if entries.count >= Self.capacity {
                entries = entries.filter { $0.value.expiresAt + TokenVerifier.clockSkew > now }
                if entries.count >= Self.capacity { entries = Dictionary(uniqueKeysWithValues: entries.prefix(Self.capacity / 2).map { ($0.key, $0.value) }) }
            }
            entries[token] = claims
        }
        return claims
    }

    /// Tokens remembered now.
    public var count: Int { entries.withLock { $0.count } }
}
