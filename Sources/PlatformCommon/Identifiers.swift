// Input rules shared by the services, so every service rejects the same bad input the same way.
import RPCCore

/// Client-supplied ids: 1 to 128 letters, digits, `.`, `_` or `-`.
public enum Identifier {
    public static let maxLength = 128

    public static func isValid(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                true
            default:
                false
            }
        }
    }

    /// Throws INVALID_ARGUMENT naming the field unless `text` is a valid id.
    public static func validate(_ text: String, field: String) throws(RPCError) {
        guard isValid(text) else {
            throw RPCError(.invalidArgument, text.isEmpty
                ? "\(field) is required"
                : "\(field) must be 1 to \(maxLength) letters, digits, '.', '_' or '-'")
        }
    }
}

/// Throws INVALID_ARGUMENT unless `value` is a finite amount of at least zero.
public func validateAmount(_ value: Double, field: String) throws(RPCError) {
    guard value.isFinite, value >= 0 else {
        throw RPCError(.invalidArgument, "\(field) must be a finite number >= 0")
    }
}

/// FNV-1a, 64 bits: a fingerprint of some bytes (to tell versions or requests apart, not a
/// security property).
public func fnv1a<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}
