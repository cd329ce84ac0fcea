// gRPC metadata: ordered, case-insensitive, multi-valued headers. Names ending in `-bin` carry
// bytes (base64 on the wire, decoded here); all other values are ASCII text.

/// Custom headers or trailers of a call, in order, names lower-cased.
public struct Metadata: Sendable, Equatable, Sequence {
    /// One metadata value: text, or bytes for a `-bin` key.
    public enum Value: Sendable, Equatable {
        case string(String)
        case binary([UInt8])
    }

    public private(set) var entries: [(name: String, value: Value)] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public mutating func add(_ name: String, _ value: String) {
        entries.append((name.lowercased(), .string(value)))
    }

    public mutating func add(_ name: String, bytes: [UInt8]) {
        entries.append((name.lowercased(), .binary(bytes)))
    }

    public mutating func add(_ name: String, _ value: Value) {
        entries.append((name.lowercased(), value))
    }

    /// The first text value for a name, if any.
    public subscript(name: String) -> String? {
        let key = Self.lowercased(name)
        for entry in entries where entry.name == key {
            if case .string(let text) = entry.value { return text }
        }
        return nil
    }

    /// The first binary value for a `-bin` name, if any.
    public func bytes(_ name: String) -> [UInt8]? {
        let key = Self.lowercased(name)
        for entry in entries where entry.name == key {
            if case .binary(let bytes) = entry.value { return bytes }
        }
        return nil
    }

    /// Names are stored lower-cased; looking one up that already is (the usual case) allocates nothing.
    private static func lowercased(_ name: String) -> String {
        name.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? name.lowercased() : name
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: Value)]> {
        entries.makeIterator()
    }

    public static func == (lhs: Metadata, rhs: Metadata) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}
