// The parts of the "gRPC over HTTP/2" spec that are pure text and bytes, shared by the server and
// the client: length-prefixed message framing, `grpc-timeout`, the percent-encoding of
// `grpc-message`, base64 for `-bin` metadata (RPCCore's `Base64`), and the HTTP-status fallback
// mapping.
import RPCCore

/// Length-prefixed message framing: 1 byte compressed flag, 4 bytes big-endian length, payload.
public enum MessageFraming {
    static let prefixLength = 5

    /// The prefix of an uncompressed message of `count` bytes.
    static func prefix(for count: Int) -> [UInt8] {
        let length = UInt32(count)
        return [0, UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
    }

    /// A whole framed message, as h2load's request bodies need it.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        prefix(for: message.count) + message
    }

    /// The declared length of the message starting at `offset`, if its prefix has arrived.
    static func declaredLength(_ bytes: [UInt8], at offset: Int) -> (compressed: Bool, length: Int)? {
        guard bytes.count - offset >= prefixLength else { return nil }
        let length = Int(bytes[offset + 1]) << 24 | Int(bytes[offset + 2]) << 16
            | Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4])
        return (bytes[offset] != 0, length)
    }
}

/// Collects the length-prefixed messages of one stream as DATA arrives, enforcing the size limit
/// as soon as a prefix declares it (before the payload is buffered).
struct MessageAssembler {
    enum Failure: Error {
        case tooLarge(Int)
        case compressed
    }

    let maxMessageSize: Int
    private(set) var buffer: [UInt8] = []
    private(set) var messages: [[UInt8]] = []

    init(maxMessageSize: Int) { self.maxMessageSize = maxMessageSize }

    /// True when bytes of an unfinished message are still buffered.
    var hasPartialMessage: Bool { !buffer.isEmpty }

    /// Hands over the complete messages assembled so far (streaming calls take them as they come).
    mutating func takeMessages() -> [[UInt8]] {
        defer { messages = [] }
        return messages
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        buffer.append(contentsOf: bytes)
        while let (compressed, length) = MessageFraming.declaredLength(buffer, at: 0) {
            if length > maxMessageSize { throw .tooLarge(length) }
            if compressed { throw .compressed }
            guard buffer.count >= MessageFraming.prefixLength + length else { return }
            if buffer.count == MessageFraming.prefixLength + length {
                messages.append(Array(buffer[MessageFraming.prefixLength...]))
                buffer.removeAll(keepingCapacity: false)
            } else {
                messages.append(Array(buffer[MessageFraming.prefixLength..<MessageFraming.prefixLength + length]))
                buffer.removeFirst(MessageFraming.prefixLength + length)
            }
        }
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
enum GRPCTimeout {
    static func parse(_ text: String) -> Duration? {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
        var value: Int64 = 0
        for digit in utf8.dropLast() {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(digit - UInt8(ascii: "0"))
        }
        let duration: Duration
        switch unit {
        case UInt8(ascii: "H"): duration = .seconds(value * 3600)
        case UInt8(ascii: "M"): duration = .seconds(value * 60)
        case UInt8(ascii: "S"): duration = .seconds(value)
        case UInt8(ascii: "m"): duration = .milliseconds(value)
        case UInt8(ascii: "u"): duration = .microseconds(value)
        case UInt8(ascii: "n"): duration = .nanoseconds(value)
        default: return nil
        }
        // 99999999H is legal and is 11,000 years: no deadline that long is meant; cap it.
        return min(duration, maximum)
    }

    /// The longest deadline honoured: far beyond any call, far inside the clock's range.
    static let maximum = Duration.seconds(100 * 365 * 86400)

    /// The most precise unit whose value fits in 8 digits.
    static func encode(_ duration: Duration) -> String {
        let (scaled, overflow) = max(0, duration.components.seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, carry) = scaled.addingReportingOverflow(max(0, duration.components.attoseconds) / 1_000_000_000)
        let nanoseconds = overflow || carry ? Int64.max : sum
        let units: [(Int64, Character)] = [(1, "n"), (1000, "u"), (1_000_000, "m"), (1_000_000_000, "S"),
                                           (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (scale, unit) in units {
            // Round up so the server never sees a shorter deadline than the client's.
            let value = nanoseconds / scale + (nanoseconds % scale == 0 ? 0 : 1)
            if value < 100_000_000 { return "\(value)\(unit)" }
        }
        return "99999999H"
    }
}

/// Percent-encoding of `grpc-message`: printable ASCII except `%` passes, the rest is `%XX` of UTF-8.
enum StatusMessageEncoding {
    static func encode(_ message: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(message.utf8.count)
        for byte in message.utf8 {
            if byte >= 0x20, byte <= 0x7E, byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// Decodes leniently: a malformed escape is kept as it is, as the spec asks.
    static func decode(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
               let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Metadata {
    /// Adds a received header, decoding `-bin` values. Returns false for an undecodable value.
    mutating func addWireValue(name: String, value: String) -> Bool {
        if name.hasSuffix("-bin") {
            guard let bytes = Base64.decode(value) else { return false }
            add(name, bytes: bytes)
        } else {
            add(name, value)
        }
        return true
    }

    /// The entries as they go on the wire (`-bin` values base64-encoded).
    var wireHeaders: [(String, String)] {
        entries.map { entry in
            switch entry.value {
            case .string(let text): (entry.name, text)
            case .binary(let bytes): (entry.name, Base64.encode(bytes))
            }
        }
    }

    /// Whether a header name is the transport's, not the application's metadata.
    static func isReserved(_ name: String) -> Bool {
        name.hasPrefix(":") || name == "content-type" || name == "te" || name == "user-agent"
            || name == "grpc-timeout" || name == "grpc-encoding" || name == "grpc-accept-encoding"
            || name == "grpc-status" || name == "grpc-message" || name == "content-length"
    }
}

extension StatusCode {
    /// The gRPC code for an HTTP response that carries no `grpc-status` (spec: HTTP to gRPC mapping).
    init(httpStatus: Int) {
        switch httpStatus {
        case 400: self = .internal
        case 401: self = .unauthenticated
        case 403: self = .permissionDenied
        case 404: self = .unimplemented
        case 429, 502, 503, 504: self = .unavailable
        default: self = .unknown
        }
    }
}
