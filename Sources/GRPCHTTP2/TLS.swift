// TLS for the server and the client, on OpenSSL 3 (Debian's libssl3).
//
// A configuration is loaded once, when it is made, into an SSL_CTX (`TLSContext`): certificate
// chain, key, trust roots and the policy every connection shares (TLS 1.2 and 1.3 only, AEAD
// ciphers with forward secrecy as RFC 9113 9.2 asks, no renegotiation, ALPN `h2` required). Bad or
// mismatched files fail right there with a `TLSError` naming the file and OpenSSL's reason, so a
// service refuses to start instead of failing its first handshake. The context is immutable
// afterwards and shared by every loop: OpenSSL makes SSL objects from one SSL_CTX on any thread.
//
// Each connection then owns a `TLSSession` (one SSL object on the connection's non-blocking
// socket, used only on its loop). The handshake is driven by readiness like everything else:
// SSL_do_handshake's WANT_READ/WANT_WRITE become the epoll interest, so a slow or stalled peer
// costs the loop nothing. After it, HTTP/2 runs over SSL_read/SSL_write with the connection's
// batching unchanged: one SSL_write per gathered batch (a WANT_WRITE is retried with the same
// bytes, which OpenSSL allows with ACCEPT_MOVING_WRITE_BUFFER). SSL_MODE_RELEASE_BUFFERS frees
// OpenSSL's record buffers whenever they are empty, so an idle TLS connection keeps no buffer of
// OpenSSL's either; the only read buffer in use is the loop's shared one (LoopBuffers).
//
// What is verified:
// - server: with a client CA file, the client must present a certificate chaining to it (mTLS);
//   a client that offers no ALPN, or no `h2`, is refused with the no_application_protocol alert.
// - client: the server's chain against the trust roots (a PEM file, else the system's), and its
//   name: the DNS name (SNI is sent) or IP address we connected to must be in a subjectAltName,
//   or the `serverNameOverride`; a server that does not select `h2` is refused.
import COpenSSL
import EventLoop
#if canImport(Glibc)
import Glibc
#endif

/// A TLS configuration that could not be loaded, or a handshake that failed, with OpenSSL's reason.
public struct TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "TLS: \(message)" }

    /// `what`, then the reasons OpenSSL queued on this thread (the queue is emptied).
    static func openSSL(_ what: String) -> TLSError {
        TLSError("\(what): \(OpenSSLErrors.drain() ?? "unknown OpenSSL error")")
    }
}

/// Server TLS: the certificate chain and key it presents, and optionally the CA that client
/// certificates must chain to (mTLS). Loading happens in `init`.
public struct ServerTLSConfiguration: Sendable {
    public let certificateChainFile: String
    public let privateKeyFile: String
    /// When set, every client must present a certificate issued by this CA (PEM, one or more).
    public let clientCAFile: String?
    let context: TLSContext

    /// Loads the PEM files; throws when one cannot be read or parsed, or when the key does not
    /// match the certificate.
    public init(certificateChainFile: String, privateKeyFile: String, clientCAFile: String? = nil) throws(TLSError) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.clientCAFile = clientCAFile
        context = try TLSContext(server: true)
        try context.useCertificate(chain: certificateChainFile, key: privateKeyFile)
        if let clientCAFile { try context.requireClientCertificates(issuedBy: clientCAFile) }
    }

    /// Whether clients must present a certificate.
    public var requiresClientCertificate: Bool { clientCAFile != nil }
}

/// Client TLS: what the server's certificate must chain to and which name it must carry, and
/// optionally a client certificate (for servers that require mTLS). Loading happens in `init`.
public struct ClientTLSConfiguration: Sendable {
    /// The CA certificates (PEM) trusted for the server's chain; nil trusts the system's roots.
    public let trustRootsFile: String?
    public let certificateChainFile: String?
    public let privateKeyFile: String?
    /// The name the server's certificate must carry (and the SNI sent) instead of the host
    /// connected to: for a server reached by an address its certificate does not name.
    public var serverNameOverride: String?
    let context: TLSContext

    /// Loads the PEM files; throws when one cannot be read or parsed, or when the key does not
    /// match the certificate. A client certificate needs both `certificateChainFile` and
    /// `privateKeyFile`.
    public init(trustRootsFile: String? = nil, certificateChainFile: String? = nil, privateKeyFile: String? = nil,
                serverNameOverride: String? = nil) throws(TLSError) {
        self.trustRootsFile = trustRootsFile
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.serverNameOverride = serverNameOverride
        context = try TLSContext(server: false)
        try context.trust(rootsFile: trustRootsFile)
        switch (certificateChainFile, privateKeyFile) {
        case (let chain?, let key?): try context.useCertificate(chain: chain, key: key)
        case (nil, nil): break
        default: throw TLSError("a client certificate needs both the certificate chain and the private key")
        }
    }
}

/// One SSL_CTX, configured once and then shared read-only by every loop (OpenSSL makes SSL
/// objects from a context on any thread), which is why it may be `@unchecked Sendable`.
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    let isServer: Bool

    /// TLS 1.2 ciphers: ECDHE with AEAD only, as RFC 9113 9.2.2 requires for HTTP/2 (and as
    /// gRPC's own default list has them). TLS 1.3's suites are all AEAD and keep OpenSSL's order.
    private static let tls12Ciphers = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// ALPN `h2`, in the wire's length-prefixed form.
    static let alpnH2: [UInt8] = [2, UInt8(ascii: "h"), UInt8(ascii: "2")]

    init(server: Bool) throws(TLSError) {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else {
            throw .openSSL("cannot create an SSL context")
        }
        self.ctx = ctx
        isServer = server
        guard c_ssl_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1,
              c_ssl_ctx_set_max_proto_version(ctx, TLS1_3_VERSION) == 1,
              SSL_CTX_set_cipher_list(ctx, Self.tls12Ciphers) == 1 else {
            throw .openSSL("cannot set the protocol versions and ciphers")
        }
        var options = C_SSL_OP_NO_RENEGOTIATION | C_SSL_OP_NO_COMPRESSION | C_SSL_OP_IGNORE_UNEXPECTED_EOF
        if server { options |= C_SSL_OP_CIPHER_SERVER_PREFERENCE }
        SSL_CTX_set_options(ctx, options)
        // Record buffers are freed whenever empty (an idle connection holds none); a retried
        // SSL_write may come from another address than the first try (our pending copy).
        _ = c_ssl_ctx_set_mode(ctx, C_SSL_MODE_RELEASE_BUFFERS | C_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        // Read whole socket reads into the record layer, not header then body: one read(2) per
        // batch of records instead of two per record.
        c_ssl_ctx_set_read_ahead(ctx, 1)
        if server {
            // No session cache that grows with every client: resumption still works, through
            // stateless tickets.
            _ = c_ssl_ctx_set_session_cache_mode(ctx, C_SSL_SESS_CACHE_OFF)
            SSL_CTX_set_client_hello_cb(ctx, Self.clientHelloCallback, nil)
            SSL_CTX_set_alpn_select_cb(ctx, Self.alpnSelectCallback, nil)
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            guard Self.alpnH2.withUnsafeBufferPointer({ SSL_CTX_set_alpn_protos(ctx, $0.baseAddress, UInt32($0.count)) }) == 0 else {
                throw .openSSL("cannot set ALPN")
            }
        }
    }

    deinit { SSL_CTX_free(ctx) }

    func useCertificate(chain: String, key: String) throws(TLSError) {
        try Self.requireReadable(chain, "certificate chain")
        try Self.requireReadable(key, "private key")
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(ctx, chain) == 1 else {
            throw .openSSL("cannot load the certificate chain \(chain)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 else {
            let reason = OpenSSLErrors.drain() ?? "unknown OpenSSL error"
            if reason.contains("mismatch") {
                throw TLSError("the private key \(key) does not match the certificate \(chain): \(reason)")
            }
            throw TLSError("cannot load the private key \(key): \(reason)")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw .openSSL("the private key \(key) does not match the certificate \(chain)")
        }
    }

    /// Server: clients must present a certificate that chains to `caFile` (mTLS).
    func requireClientCertificates(issuedBy caFile: String) throws(TLSError) {
        try Self.requireReadable(caFile, "client CA")
        ERR_clear_error()
        guard SSL_CTX_load_verify_file(ctx, caFile) == 1 else {
            throw .openSSL("cannot load the client CA \(caFile)")
        }
        // The CertificateRequest names the acceptable issuers, so a client picks the right cert.
        guard let names = SSL_load_client_CA_file(caFile) else {
            throw .openSSL("cannot read the CA names of \(caFile)")
        }
        SSL_CTX_set_client_CA_list(ctx, names)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
    }

    /// Client: the roots the server's chain must reach (`rootsFile`, else the system's).
    func trust(rootsFile: String?) throws(TLSError) {
        ERR_clear_error()
        if let rootsFile {
            try Self.requireReadable(rootsFile, "trust roots")
            guard SSL_CTX_load_verify_file(ctx, rootsFile) == 1 else {
                throw .openSSL("cannot load the trust roots \(rootsFile)")
            }
        } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
            throw .openSSL("cannot load the system's trust roots")
        }
    }

    private static func requireReadable(_ path: String, _ what: String) throws(TLSError) {
        guard let file = fopen(path, "r") else {
            throw TLSError("cannot read the \(what) file \(path): \(String(cString: strerror(errno)))")
        }
        fclose(file)
    }

    // MARK: - Callbacks (C functions: no captures; the server's policy is fixed)

    /// Refuses a ClientHello without ALPN: HTTP/2 over TLS must be negotiated (RFC 9113 3.2).
    private static let clientHelloCallback: SSL_client_hello_cb_fn = { ssl, alert, _ in
        var data: UnsafePointer<UInt8>?
        var length = 0
        if SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_application_layer_protocol_negotiation), &data, &length) == 1 {
            return SSL_CLIENT_HELLO_SUCCESS
        }
        alert?.pointee = SSL_AD_NO_APPLICATION_PROTOCOL
        return SSL_CLIENT_HELLO_ERROR
    }

    /// Selects `h2` from the client's list, or fails the handshake with no_application_protocol.
    private static let alpnSelectCallback: SSL_CTX_alpn_select_cb_func = { _, out, outLength, offered, offeredLength, _ in
        guard let offered, let out, let outLength else { return SSL_TLSEXT_ERR_ALERT_FATAL }
        var index = 0
        let end = Int(offeredLength)
        while index < end {
            let length = Int(offered[index])
            guard index + 1 + length <= end else { break }
            if length == 2, offered[index + 1] == UInt8(ascii: "h"), offered[index + 2] == UInt8(ascii: "2") {
                out.pointee = offered + index + 1
                outLength.pointee = 2
                return SSL_TLSEXT_ERR_OK
            }
            index += 1 + length
        }
        return SSL_TLSEXT_ERR_ALERT_FATAL
    }
}

extension ServerTLSConfiguration {
    /// A session for an accepted socket, or nil when OpenSSL cannot make one (out of memory).
    func makeSession(fd: Int32) -> TLSSession? {
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { _ = OpenSSLErrors.drain(); return nil }
        guard SSL_set_fd(ssl, fd) == 1 else {
            _ = OpenSSLErrors.drain()
            SSL_free(ssl)
            return nil
        }
        SSL_set_accept_state(ssl)
        return TLSSession(ssl: ssl)
    }
}

extension ClientTLSConfiguration {
    /// A session for a connected socket to `host`, verifying the server's name (the override if
    /// set, else `host`, an IP address or a DNS name).
    func makeSession(fd: Int32, host: String) throws(TLSError) -> TLSSession {
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { throw .openSSL("cannot create a TLS session") }
        let session = TLSSession(ssl: ssl)
        guard SSL_set_fd(ssl, fd) == 1 else { throw .openSSL("cannot attach the TLS session to the socket") }
        SSL_set_connect_state(ssl)
        let name = serverNameOverride ?? host
        if Self.isIPAddress(name) {
            // An IP address is matched against IP subjectAltNames; SNI carries no addresses.
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 else {
                throw .openSSL("cannot verify the server's address \(name)")
            }
        } else {
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            guard SSL_set1_host(ssl, name) == 1, c_ssl_set_tlsext_host_name(ssl, name) == 1 else {
                throw .openSSL("cannot verify the server's name \(name)")
            }
        }
        return session
    }

    static func isIPAddress(_ text: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET, text, &storage) == 1 || inet_pton(AF_INET6, text, &storage) == 1
    }
}

/// One connection's SSL object, on its loop only. Reads and writes map OpenSSL's outcomes onto
/// the socket's `IOResult`, so the connection's I/O path stays the same for TLS and h2c. Each
/// operation starts with an empty error queue: SSL_get_error reads the thread's queue, and other
/// code on the loop thread (a handler verifying a signature, say) may have left errors there.
final class TLSSession {
    private var ssl: OpaquePointer?
    /// The handshake has completed.
    private(set) var established = false
    /// A fatal TLS error happened: no close_notify may be sent any more.
    private var fatal = false
    /// Why the session failed, for the connection's close reason.
    private(set) var failure: String?
    /// The last SSL_read could not proceed until the socket is writable (or the reverse): the
    /// connection adds that direction to its epoll interest until the next try.
    private(set) var readWantsWrite = false
    private(set) var writeWantsRead = false

    init(ssl: OpaquePointer) { self.ssl = ssl }

    deinit { if let ssl { SSL_free(ssl) } }

    enum HandshakeStep {
        case done
        case wantRead
        case wantWrite
        case failed(String)
    }

    /// Advances the handshake as far as the socket allows.
    func handshake() -> HandshakeStep {
        guard let ssl else { return .failed("the TLS session is closed") }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            established = true
            return .done
        }
        let code = SSL_get_error(ssl, result)
        let savedErrno = errno
        switch code {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        default:
            let reason = describe(code, errno: savedErrno, handshaking: true)
            failure = reason
            return .failed(reason)
        }
    }

    /// The protocol ALPN agreed on, if any.
    var negotiatedProtocol: String? {
        guard let ssl else { return nil }
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// Whether OpenSSL holds decrypted or undecrypted input that epoll cannot see.
    var hasPendingInput: Bool {
        guard let ssl else { return false }
        return SSL_has_pending(ssl) == 1
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        guard let ssl else { return .closed }
        readWantsWrite = false
        ERR_clear_error()
        var count = 0
        if SSL_read_ex(ssl, buffer.baseAddress, buffer.count, &count) == 1 { return .transferred(count) }
        return outcome(SSL_get_error(ssl, 0), errno: errno, reading: true)
    }

    func write(from buffer: UnsafeRawBufferPointer) -> IOResult {
        guard let ssl else { return .closed }
        writeWantsRead = false
        ERR_clear_error()
        var count = 0
        if SSL_write_ex(ssl, buffer.baseAddress, buffer.count, &count) == 1 { return .transferred(count) }
        return outcome(SSL_get_error(ssl, 0), errno: errno, reading: false)
    }

    private func outcome(_ code: Int32, errno savedErrno: Int32, reading: Bool) -> IOResult {
        switch code {
        case SSL_ERROR_WANT_READ:
            if !reading { writeWantsRead = true }
            return .wouldBlock
        case SSL_ERROR_WANT_WRITE:
            if reading { readWantsWrite = true }
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            return .closed  // close_notify (or EOF, with IGNORE_UNEXPECTED_EOF)
        case SSL_ERROR_SYSCALL where ERR_peek_error() == 0:
            fatal = true
            if savedErrno == 0 { return .closed }
            failure = String(cString: strerror(savedErrno))
            return .failed(savedErrno)
        default:
            fatal = true
            failure = describe(code, errno: savedErrno, handshaking: false)
            return .failed(EPROTO)
        }
    }

    /// OpenSSL's account of a failure, with the certificate verification result when that is
    /// what failed. Empties the thread's error queue.
    private func describe(_ code: Int32, errno savedErrno: Int32, handshaking: Bool) -> String {
        fatal = true
        let queued = OpenSSLErrors.drain()
        if let ssl {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
                return "certificate verify failed: \(String(cString: text))"
            }
        }
        if let queued { return queued }
        if code == SSL_ERROR_SYSCALL {
            if savedErrno != 0 { return String(cString: strerror(savedErrno)) }
            return handshaking ? "the peer closed the connection during the TLS handshake" : "the peer closed the connection"
        }
        return "TLS error \(code)"
    }

    /// Sends close_notify if the session is healthy (best effort, never waits), then frees the
    /// SSL object: a closed connection holds no OpenSSL state even while tasks still refer to it.
    func close() {
        guard let ssl else { return }
        if established && !fatal { _ = SSL_shutdown(ssl) }
        _ = OpenSSLErrors.drain()
        SSL_free(ssl)
        self.ssl = nil
    }
}

/// OpenSSL's per-thread error queue.
enum OpenSSLErrors {
    /// The reasons queued on this thread, oldest first, without repeats; empties the queue.
    static func drain() -> String? {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            guard code != 0 else { break }
            let reason = text(code)
            if reasons.last != reason { reasons.append(reason) }
        }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }

    private static func text(_ code: UInt) -> String {
        if let reason = ERR_reason_error_string(code) { return String(cString: reason) }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
