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

/// One unary method: its full path and its request and response types.
public struct MethodDescriptor<Request: GRPCMessage, Response: GRPCMessage>: Sendable {
    /// Fully qualified service name, e.g. `order_service.OrderService`.
    public let service: String
    public let method: String
    /// The HTTP/2 `:path`, e.g. `/order_service.OrderService/PlaceOrder`.
    public let path: String

    public init(service: String, method: String) {
        self.service = service
        self.method = method
        self.path = "/\(service)/\(method)"
    }
}
