// The client side's transport-agnostic half: generated clients call `UnaryTransport.call`, which
// encodes, asks the transport for one unary exchange, and decodes.

/// Per-call settings.
public struct CallOptions: Sendable {
    /// How long the client waits; sent to the server as `grpc-timeout`.
    public var timeout: Duration?
    /// Custom request headers.
    public var metadata: Metadata

    public init(timeout: Duration? = nil, metadata: Metadata = Metadata()) {
        self.timeout = timeout
        self.metadata = metadata
    }
}

/// A successful unary exchange as bytes, with the server's response metadata.
public struct UnaryResponse: Sendable {
    public var message: [UInt8]
    public var headers: Metadata
    public var trailers: Metadata

    public init(message: [UInt8], headers: Metadata, trailers: Metadata) {
        self.message = message
        self.headers = headers
        self.trailers = trailers
    }
}

/// Something that performs a unary gRPC exchange: our HTTP/2 client, or a test double.
public protocol UnaryTransport: Sendable {
    func unary(path: String, request: [UInt8], options: CallOptions) async throws(RPCError) -> UnaryResponse
}

extension UnaryTransport {
    /// One typed unary call; failures (including an undecodable response) surface as `RPCError`.
    public func call<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, options: CallOptions = CallOptions()
    ) async throws(RPCError) -> Response {
        try await callWithMetadata(method, request, options: options).message
    }

    /// Like `call`, also returning the response headers and trailers.
    public func callWithMetadata<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, options: CallOptions = CallOptions()
    ) async throws(RPCError) -> (message: Response, headers: Metadata, trailers: Metadata) {
        let response = try await unary(path: method.path, request: request.serializedBytes(), options: options)
        do {
            return (try Response(serializedBytes: response.message), response.headers, response.trailers)
        } catch {
            throw RPCError(.internal, "\(error) in the response of \(method.path)")
        }
    }
}
