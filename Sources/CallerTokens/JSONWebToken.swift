// JSON Web Tokens signed with Ed25519 (RFC 7519 with RFC 8037's `EdDSA`): the caller identity the
// services accept in `authorization: Bearer <token>`.
//
// Verification is strict and in a fixed order, so each refusal says exactly what was wrong: size
// (at most 8 KiB), shape (three base64url parts), header (JSON, `alg` exactly `EdDSA`: `none`,
// HS256 and friends are refused before any key is touched, which is what defeats the "HS256
// signed with the public key" confusion), signature (by one of the configured public keys), then
// claims (`sub`, `role` and `exp` required; `exp` and `nbf` checked with a small clock skew;
// `aud` when an audience is configured). Only then are the claims trusted.
import FoundationEssentials
import RPCCore

/// A verified token's claims.
public struct TokenClaims: Sendable, Equatable {
    public let subject: String
    public let role: String
    /// Seconds since the Unix epoch.
    public let expiresAt: Double
    public let audience: [String]
}

/// Why a token was refused.
public struct TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Verifies tokens against a set of public keys.
public struct TokenVerifier: Sendable {
    /// The largest token accepted, in bytes.
    public static let maximumSize = 8 * 1024
    /// How far a clock may be off, for `exp` and `nbf`.
    public static let clockSkew: Double = 30

    private let keys: Ed25519PublicKeys
    private let audience: String?

    /// `audience`: when set, the token's `aud` must name it.
    public init(keys: Ed25519PublicKeys, audience: String? = nil) {
        self.keys = keys
        self.audience = audience
    }

    /// The claims of a valid token; `now` in seconds since the Unix epoch.
    public func verify(_ token: String, now: Double) throws(TokenError) -> TokenClaims {
        guard token.utf8.count <= Self.maximumSize else {
            throw TokenError("the token is larger than \(Self.maximumSize) bytes")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signature = Base64URL.decode(parts[2]) else {
            throw TokenError("the token is not a JWT (three base64url parts)")
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(headerBytes)) else {
            throw TokenError("the token's header is not valid JSON")
        }
        guard header.alg == "EdDSA" else {
            throw TokenError("the token is signed with \(header.alg.isEmpty ? "no algorithm" : header.alg); only EdDSA is accepted")
        }
        let signed = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard keys.verify(signature: signature, of: signed) else {
            throw TokenError("the token's signature does not match any trusted key")
        }
        guard let payload = try? JSONDecoder().decode(Payload.self, from: Data(payloadBytes)) else {
            throw TokenError("the token's claims are not valid JSON")
        }
        guard let subject = payload.sub, !subject.isEmpty else { throw TokenError("the token has no sub claim") }
        guard let role = payload.role, !role.isEmpty else { throw TokenError("the token has no role claim") }
        guard let expiresAt = payload.exp else { throw TokenError("the token has no exp claim") }
        guard expiresAt + Self.clockSkew > now else { throw TokenError("the token expired") }
        if let notBefore = payload.nbf, notBefore - Self.clockSkew > now {
            throw TokenError("the token is not valid yet")
        }
        let audiences = payload.aud?.values ?? []
        if let audience, !audiences.contains(audience) {
            throw TokenError("the token is not meant for \(audience)")
        }
        return TokenClaims(subject: subject, role: role, expiresAt: expiresAt, audience: audiences)
    }

    private struct Header: Decodable {
        let alg: String
    }

    private struct Payload: Decodable {
        let sub: String?
        let role: String?
        let exp: Double?
        let nbf: Double?
        let aud: Audience?
    }

    /// `aud` is a string or an array of strings.
    private struct Audience: Decodable {
        let values: [String]
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let single = try? container.decode(String.self) {
                values = [single]
            } else {
                values = try container.decode([String].self)
            }
        }
    }
}

/// Mints tokens (test-client, development set-ups, tests).
public struct TokenSigner: Sendable {
    private let key: Ed25519PrivateKey

    public init(key: Ed25519PrivateKey) { self.key = key }

    /// A token for `subject` in `role`, valid for `lifetime` seconds from `now`.
    public func token(subject: String, role: String, lifetime: Double, now: Double, audience: String? = nil) -> String {
        var claims: [String: JSONValue] = ["sub": .string(subject), "role": .string(role), "exp": .number((now + lifetime).rounded(.down)),
                                           "iat": .number(now.rounded(.down))]
        if let audience { claims["aud"] = .string(audience) }
        let header = Base64URL.encode(Array(#"{"alg":"EdDSA","typ":"JWT"}"#.utf8))
        let payload = Base64URL.encode(Array(JSONValue.object(claims).text.utf8))
        let signature = key.sign(Array("\(header).\(payload)".utf8))
        return "\(header).\(payload).\(Base64URL.encode(signature))"
    }
}

/// The few JSON values a token's claims need, written in a stable order.
enum JSONValue {
    case string(String)
    case number(Double)
    case object([String: JSONValue])

    var text: String {
        switch self {
        case .string(let value):
            var out = "\""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        case .number(let value):
            return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
        case .object(let members):
            return "{" + members.keys.sorted().map { "\(JSONValue.string($0).text):\(members[$0]!.text)" }.joined(separator: ",") + "}"
        }
    }
}

/// base64url without padding (RFC 4648 section 5), as JWTs use it (RPCCore's `Base64`).
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String { Base64.encode(bytes, alphabet: .url, padded: false) }

    /// Strict: only the canonical spelling (URL alphabet, no padding, no stray bits) decodes, so
    /// one token has exactly one text (a lenient decoder would let a holder of one valid token
    /// spell it in thousands of ways, each a cache miss and a signature check).
    public static func decode(_ text: Substring) -> [UInt8]? {
        guard let bytes = Base64.decode(text), encode(bytes).utf8.elementsEqual(text.utf8) else { return nil }
        return bytes
    }
}
