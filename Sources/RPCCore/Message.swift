// What the gRPC layer needs of a message: bytes out, bytes in. The generated codecs in
// PlatformProtos conform; the layer never sees a concrete message type.

/// A protobuf message the gRPC layer can carry.
public protocol GRPCMessage: Sendable {
    init()
    init(serializedBytes: [UInt8]) throws(MessageDecodingError)
    func serializedBytes() -> [UInt8]
}

/// The bytes are not a valid encoding of the expected message.
public struct MessageDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var messageType: String
    public init(messageType: String) { self.messageType = messageType }
    public var description: String { "could not decode \(messageType)" }
}

/// The four kinds of RPC gRPC defines, by whether each side sends one message or a stream.
public enum RPCKind: String, Sendable, CaseIterable {
    case unary
    case serverStreaming = "server_stream"
    case clientStreaming = "client_stream"
    case bidirectionalStreaming = "bidi_stream"

    /// True when the client may send any number of request messages.
    public var clientStreams: Bool { self == .clientStreaming || self == .bidirectionalStreaming }
    /// True when the server may send any number of response messages.
    public var serverStreams: Bool { self == .serverStreaming || self == .bidirectionalStreaming }
}

/// One method: its full path, its kind and its request and response types.
public struct MethodDescriptor<Request: GRPCMessage, Response: GRPCMessage>: Sendable {
    /// Fully qualified service name, e.g. `order_service.OrderService`.
    public let service: String
    public let method: String
    /// The HTTP/2 `:path`, e.g. `/order_service.OrderService/PlaceOrder`.
    public let path: String
    public let kind: RPCKind

    public init(service: String, method: String, kind: RPCKind = .unary) {
        self.service = service
        self.method = method
        self.path = "/\(service)/\(method)"
        self.kind = kind
    }
}
