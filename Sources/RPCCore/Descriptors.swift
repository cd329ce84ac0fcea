// What a server knows of the .proto files behind its services, for server reflection: each file's
// serialized FileDescriptorProto as protoc wrote it, and the names it defines and imports.
// Generated code declares one per .proto file; the transport never looks inside.

/// One .proto file, as protoc described it.
public struct ProtoFileDescriptor: Sendable {
    /// The file's name as imported, e.g. `order_service.proto`.
    public let name: String
    /// The files it imports, by name.
    public let dependencies: [String]
    /// Every fully qualified name it defines: services, methods, messages, enums.
    public let symbols: [String]
    /// The services it defines, fully qualified.
    public let services: [String]
    /// The serialized `google.protobuf.FileDescriptorProto`.
    public let serialized: [UInt8]

    public init(name: String, dependencies: [String], symbols: [String], services: [String], serialized: [UInt8]) {
        self.name = name
        self.dependencies = dependencies
        self.symbols = symbols
        self.services = services
        self.serialized = serialized
    }
}
