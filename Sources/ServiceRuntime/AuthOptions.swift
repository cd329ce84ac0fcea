// How a service authenticates its callers: `AUTH=required` (the default) installs the access
// policy (PlatformAuth) with the public keys of `AUTH_JWT_PUBLIC_KEYS`; `AUTH=off` serves the
// seed's open contract and says so loudly at start. A service configured to require tokens but
// given no keys refuses to start rather than run open by accident.
import ArgumentParser
import CallerTokens
import Logging
import PlatformAuth
import RPCCore

/// The authentication flags every service takes.
public struct AuthOptions: ParsableArguments, Sendable {
    @Option(help: "required or off (env AUTH, default required).") public var auth: String?
    @Option(help: "PEM file with the Ed25519 public keys tokens may be signed with (env AUTH_JWT_PUBLIC_KEYS).")
    public var authJwtPublicKeys: String?
    @Option(help: "When set, tokens must name this audience in aud (env AUTH_AUDIENCE).") public var authAudience: String?

    public init() {}

    /// The interceptors that enforce the access policy, none with AUTH=off. `parties` answers
    /// for the orders this service owns.
    public func interceptors(parties: (any OrderPartiesLookup)?, logger: Logger) throws -> [any ServerInterceptor] {
        let mode = ServiceOptions.setting(auth, env: "AUTH") ?? "required"
        switch mode {
        case "off":
            logger.warning("AUTH=off: every RPC is open to anyone who can reach this port; use it for local development only")
            return []
        case "required":
            guard let path = ServiceOptions.setting(authJwtPublicKeys, env: "AUTH_JWT_PUBLIC_KEYS") else {
                throw ValidationError("AUTH=required needs AUTH_JWT_PUBLIC_KEYS (a PEM file of Ed25519 public keys), or AUTH=off")
            }
            let keys: Ed25519PublicKeys
            do {
                keys = try Ed25519PublicKeys(pemFile: path)
            } catch {
                throw ValidationError("AUTH_JWT_PUBLIC_KEYS: \(error)")
            }
            let audience = ServiceOptions.setting(authAudience, env: "AUTH_AUDIENCE")
            logger.info("callers authenticated by token", metadata: ["keys": "\(keys.count)", "audience": "\(audience ?? "any")"])
            let tokens = TokenCache(verifier: TokenVerifier(keys: keys, audience: audience))
            return [AccessPolicy(tokens: tokens, parties: parties, logger: logger)]
        default:
            throw ValidationError("AUTH must be required or off, got \(mode)")
        }
    }
}
