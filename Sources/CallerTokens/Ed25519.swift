// Ed25519 keys and signatures on OpenSSL 3, the only C this module touches. In OpenSSL 3 Ed25519
// is a one-shot signature: EVP_DigestSign/Verify with a NULL digest, no streaming update. A key
// is parsed once (PEM) and then only read, which OpenSSL allows from any thread; every
// signature or verification uses its own EVP_MD_CTX.
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Why a key could not be loaded.
public struct KeyError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Ed25519 public keys, as many as a PEM file holds (so keys can be rotated: old and new side by side).
public final class Ed25519PublicKeys: @unchecked Sendable {
    // Immutable after init; OpenSSL keys may be used for verification from several threads.
    private let keys: [OpaquePointer]

    /// Reads every `PUBLIC KEY` block of a PEM file; each must be an Ed25519 key.
    public convenience init(pemFile path: String) throws(KeyError) {
        guard let file = fopen(path, "r") else { throw KeyError("cannot read \(path)") }
        defer { fclose(file) }
        var keys: [OpaquePointer] = []
        while let key = PEM_read_PUBKEY(file, nil, nil, nil) {
            keys.append(key)
        }
        ERR_clear_error()  // the read that ended the loop left "no start line"
        try self.init(keys: keys, source: path)
    }

    /// Parses PEM text holding one or more public keys.
    public convenience init(pem: String) throws(KeyError) {
        var keys: [OpaquePointer] = []
        var text = pem
        text.withUTF8 { utf8 in
            guard let bio = BIO_new_mem_buf(utf8.baseAddress, Int32(utf8.count)) else { return }
            defer { BIO_free(bio) }
            while let key = PEM_read_bio_PUBKEY(bio, nil, nil, nil) { keys.append(key) }
        }
        ERR_clear_error()
        try self.init(keys: keys, source: "the PEM text")
    }

    private init(keys: [OpaquePointer], source: String) throws(KeyError) {
        guard !keys.isEmpty else { throw KeyError("\(source) holds no public key") }
        if let other = keys.first(where: { EVP_PKEY_get_id($0) != EVP_PKEY_ED25519 }) {
            let type = EVP_PKEY_get_id(other)
            keys.forEach { EVP_PKEY_free($0) }
            throw KeyError("\(source) holds a key that is not Ed25519 (type \(type))")
        }
        self.keys = keys
    }

    deinit { keys.forEach { EVP_PKEY_free($0) } }

    public var count: Int { keys.count }

    /// Whether any of the keys signed `message` with `signature`.
    public func verify(signature: [UInt8], of message: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        return keys.contains { Self.verify(key: $0, signature: signature, message: message) }
    }

    private static func verify(key: OpaquePointer, signature: [UInt8], message: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1 else { return false }
        let result = signature.withUnsafeBufferPointer { signature in
            message.withUnsafeBufferPointer { message in
                EVP_DigestVerify(context, signature.baseAddress, signature.count, message.baseAddress, message.count)
            }
        }
        ERR_clear_error()
        return result == 1
    }
}

/// An Ed25519 private key, for minting tokens (test-client and development set-ups).
public final class Ed25519PrivateKey: @unchecked Sendable {
    private let key: OpaquePointer

    /// Reads a `PRIVATE KEY` PEM file (`openssl genpkey -algorithm ed25519`).
    public init(pemFile path: String) throws(KeyError) {
        guard let file = fopen(path, "r") else { throw KeyError("cannot read \(path)") }
        defer { fclose(file) }
        guard let key = PEM_read_PrivateKey(file, nil, nil, nil) else {
            ERR_clear_error()
            throw KeyError("\(path) holds no private key")
        }
        guard EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 else {
            EVP_PKEY_free(key)
            throw KeyError("\(path) is not an Ed25519 key")
        }
        self.key = key
    }

    deinit { EVP_PKEY_free(key) }

    /// The 64-byte signature of `message`.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { return [] }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1 else { return [] }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = signature.count
        let result = signature.withUnsafeMutableBufferPointer { signature in
            message.withUnsafeBufferPointer { message in
                EVP_DigestSign(context, signature.baseAddress, &length, message.baseAddress, message.count)
            }
        }
        return result == 1 ? Array(signature.prefix(length)) : []
    }
}
