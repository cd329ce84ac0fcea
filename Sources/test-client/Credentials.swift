// How test-client proves who it is. A token given with `--token` or `PLATFORM_TOKEN` is sent on
// every call. Without one, test-client mints the token each call needs (the customer who places
// an order, the restaurant that accepts it, the driver whose assignments are read, an operator
// for the rest) with the development signing key that `scripts/run-platform` writes under its
// run directory, so the README's commands and the tour work unchanged with AUTH=required. With
// neither, calls carry no token (a platform with AUTH=off).
import ArgumentParser
import CallerTokens
import FoundationEssentials
import RPCCore
import Synchronization

/// The identity a call is made as.
struct Identity: Hashable, Sendable {
    let role: String
    let subject: String

    static let `operator` = Identity(role: "operator", subject: "test-client")
    static func customer(_ id: String) -> Identity { Identity(role: "customer", subject: id) }
    static func restaurant(_ id: String) -> Identity { Identity(role: "restaurant", subject: id) }
    static func driver(_ id: String) -> Identity { Identity(role: "driver", subject: id) }
}

/// Where tokens come from.
final class Credentials: Sendable {
    enum Source: Sendable {
        case fixed(String)
        case minted(TokenSigner)
        case none
    }

    /// Minted tokens live this long (seconds), and are reused until near their end.
    static let mintedLifetime: Double = 3600

    let source: Source
    private let minted = Mutex<[Identity: (token: String, expires: Double)]>([:])

    init(source: Source) { self.source = source }

    /// The `authorization` metadata for a call made as `identity`.
    func metadata(for identity: Identity) -> Metadata {
        var metadata = Metadata()
        switch source {
        case .fixed(let token):
            metadata.add("authorization", "Bearer \(token)")
        case .minted(let signer):
            let now = Date().timeIntervalSince1970
            let token = minted.withLock { cache -> String in
                if let cached = cache[identity], cached.expires - 60 > now { return cached.token }
                let token = signer.token(subject: identity.subject, role: identity.role, lifetime: Self.mintedLifetime, now: now)
                cache[identity] = (token, now + Self.mintedLifetime)
                return token
            }
            metadata.add("authorization", "Bearer \(token)")
        case .none:
            break
        }
        return metadata
    }

    /// The development files `scripts/run-platform` writes: `PLATFORM_DEV_DIR`, else `RUN_DIR`,
    /// else `.run` (relative to the current directory).
    static var developmentDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        return environment["PLATFORM_DEV_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["RUN_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? ".run"
    }

    static var developmentSigningKey: String { developmentDirectory + "/auth/signing.key" }
    static var developmentCA: String { developmentDirectory + "/tls/ca.pem" }

    /// `--token`/`PLATFORM_TOKEN`, else the development signing key if there is one, else none.
    static func resolve(token: String?) throws(ValidationError) -> Credentials {
        let environment = ProcessInfo.processInfo.environment
        if let token = token ?? environment["PLATFORM_TOKEN"].flatMap({ $0.isEmpty ? nil : $0 }) {
            return Credentials(source: .fixed(token))
        }
        let path = developmentSigningKey
        guard FileManager.default.fileExists(atPath: path) else { return Credentials(source: .none) }
        do {
            return Credentials(source: .minted(TokenSigner(key: try Ed25519PrivateKey(pemFile: path))))
        } catch {
            throw ValidationError("\(path): \(error)")
        }
    }
}

/// `test-client token`: mints a development token, for grpcurl and other clients.
struct MintToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Mints a development token (signed with run-platform's key) and prints it.")

    @Option(help: "customer, restaurant, driver, operator or service.") var role: String
    @Option(help: "The caller's id (sub): the customer, restaurant or driver id.") var sub: String
    @Option(help: "Seconds the token is valid.") var ttl: Double = 3600
    @Option(help: "The audience (aud), when the services check one (AUTH_AUDIENCE).") var audience: String?
    @Option(help: "The Ed25519 private key (default: the development key under .run/auth).") var key: String?

    func validate() throws {
        guard ["customer", "restaurant", "driver", "operator", "service"].contains(role) else {
            throw ValidationError("--role must be customer, restaurant, driver, operator or service")
        }
        guard ttl > 0 else { throw ValidationError("--ttl must be positive") }
    }

    func run() throws {
        let path = key ?? Credentials.developmentSigningKey
        let signer: TokenSigner
        do {
            signer = TokenSigner(key: try Ed25519PrivateKey(pemFile: path))
        } catch {
            throw ValidationError("\(path): \(error) (start the platform with scripts/run-platform, or pass --key)")
        }
        print(signer.token(subject: sub, role: role, lifetime: ttl, now: Date().timeIntervalSince1970, audience: audience))
    }
}
