// TLS for a service's port: `--tls-cert`/`TLS_CERT` and `--tls-key`/`TLS_KEY` (PEM) serve TLS
// with ALPN h2 instead of h2c, and `--tls-client-ca`/`TLS_CLIENT_CA` also requires every client
// to present a certificate issued by that CA (mTLS). A flag wins over its environment variable;
// with neither, the port serves h2c as before. The files are loaded at start: an unreadable file,
// a bad PEM or a key that does not match the certificate stops the service with OpenSSL's reason.
//
// For a service's own calls to another one, `clientTLS(env:)` reads `<PREFIX>_TLS_CA` (the CA to
// trust; TLS is on when it is set) and optionally `<PREFIX>_TLS_CERT`/`<PREFIX>_TLS_KEY` (a client
// certificate, for a server that requires mTLS): the restaurant service's `ORDER_SERVICE_TLS_CA`,
// the order service's `RESTAURANT_SERVICE_TLS_CA`. `peerChannel` builds the whole channel: the
// address from a flag or `<PREFIX>_ADDR`, then that TLS.
import ArgumentParser
import GRPCHTTP2

/// The TLS flags every service takes.
public struct TLSOptions: ParsableArguments, Sendable {
    @Option(help: "PEM certificate chain to serve TLS with (env TLS_CERT; needs --tls-key).") public var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert (env TLS_KEY).") public var tlsKey: String?
    @Option(help: "PEM CA that client certificates must chain to: requires mTLS (env TLS_CLIENT_CA).")
    public var tlsClientCa: String?

    public init() {}

    /// The server's TLS, or nil for h2c. Throws when the flags do not go together or the files
    /// cannot be loaded.
    public func serverTLSConfiguration() throws -> ServerTLSConfiguration? {
        let cert = ServiceOptions.setting(tlsCert, env: "TLS_CERT")
        let key = ServiceOptions.setting(tlsKey, env: "TLS_KEY")
        let clientCA = ServiceOptions.setting(tlsClientCa, env: "TLS_CLIENT_CA")
        switch (cert, key) {
        case (let cert?, let key?):
            return try ServerTLSConfiguration(certificateChainFile: cert, privateKeyFile: key, clientCAFile: clientCA)
        case (nil, nil):
            guard clientCA == nil else { throw ValidationError("TLS_CLIENT_CA needs TLS_CERT and TLS_KEY") }
            return nil
        default:
            throw ValidationError("TLS_CERT and TLS_KEY go together (got only \(cert == nil ? "TLS_KEY" : "TLS_CERT"))")
        }
    }

    /// A channel to another platform service: `host:port` from `flag`, else `<prefix>_ADDR`, else
    /// `defaultAddress`; TLS as `clientTLS(env: prefix)` says.
    public static func peerChannel(_ flag: String?, prefix: String, defaultAddress: String) throws -> GRPCChannel {
        let text = ServiceOptions.setting(flag, env: "\(prefix)_ADDR") ?? defaultAddress
        guard let address = try? TargetAddress(parsing: text) else {
            throw ValidationError("\(prefix)_ADDR must be host:port, got \(text)")
        }
        var configuration = ClientConfiguration()
        configuration.tls = try clientTLS(env: prefix)
        return GRPCChannel(host: address.host, port: address.port, configuration: configuration)
    }

    /// A client's TLS from `<prefix>_TLS_CA` (and optional `<prefix>_TLS_CERT`/`<prefix>_TLS_KEY`),
    /// or nil for h2c when the CA is not set.
    public static func clientTLS(env prefix: String) throws -> ClientTLSConfiguration? {
        guard let ca = ServiceOptions.setting(nil, env: "\(prefix)_TLS_CA") else { return nil }
        return try ClientTLSConfiguration(trustRootsFile: ca,
                                          certificateChainFile: ServiceOptions.setting(nil, env: "\(prefix)_TLS_CERT"),
                                          privateKeyFile: ServiceOptions.setting(nil, env: "\(prefix)_TLS_KEY"))
    }
}
