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

/// One streaming call as the client sees it, in bytes: its requests go to `requests` (then
/// `finishRequests` half-closes), its responses come from `responses`, which ends (nil) with OK or
/// throws the call's status.
public protocol ClientStream: Sendable {
    var requests: any MessageSink { get }
    var responses: any MessageSource { get }
    /// Half-closes: the server sees the end of the requests.
    func finishRequests() async
    /// The response headers, once they arrived (empty for a Trailers-Only answer).
    func responseHeaders() async throws(RPCError) -> Metadata
    /// The trailers, once the call has ended with OK.
    func trailers() async -> Metadata
}

/// A transport that also carries streaming calls: our HTTP/2 channel, or an in-process one.
public protocol ClientTransport: UnaryTransport {
    /// Opens a call to `path` and runs `body` with it. When `body` returns or throws before the
    /// call has ended, the call is cancelled (the server sees RST_STREAM CANCEL).
    func withStream<Result: Sendable>(
        path: String, options: CallOptions, _ body: (any ClientStream) async throws -> Result
    ) async throws -> Result
}

extension ClientTransport {
    /// A server-streaming call: one request, then `handle` reads the responses.
    public func serverStreaming<Request, Response, Result: Sendable>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, options: CallOptions = CallOptions(),
        onResponse handle: (RPCAsyncSequence<Response>) async throws -> Result
    ) async throws -> Result {
        try await withStream(path: method.path, options: options) { stream in
            try await stream.requests.write(request.serializedBytes())
            await stream.finishRequests()
            return try await handle(RPCAsyncSequence(stream.responses))
        }
    }

    /// A client-streaming call: `produce` writes the requests, then the one response comes back.
    public func clientStreaming<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, options: CallOptions = CallOptions(),
        requests produce: (RPCWriter<Request>) async throws -> Void
    ) async throws -> Response {
        try await withStream(path: method.path, options: options) { stream in
            try await produce(RPCWriter(stream.requests))
            await stream.finishRequests()
            var responses = RPCAsyncSequence<Response>(stream.responses).makeAsyncIterator()
            guard let response = try await responses.next() else {
                throw RPCError(.unimplemented, "\(method.path) ended without a response message")
            }
            guard try await responses.next() == nil else {
                throw RPCError(.unimplemented, "\(method.path) sent more than one response message")
            }
            return response
        }
    }

    /// A bidirectional call: `produce` writes the requests (then the call half-closes) while
    /// `handle` reads the responses, concurrently.
    public func bidirectionalStreaming<Request, Response, Result: Sendable>(
        _ method: MethodDescriptor<Request, Response>, options: CallOptions = CallOptions(),
        requests produce: @escaping @Sendable (RPCWriter<Request>) async throws -> Void,
        onResponse handle: (RPCAsyncSequence<Response>) async throws -> Result
    ) async throws -> Result {
        try await withStream(path: method.path, options: options) { stream in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await produce(RPCWriter(stream.requests))
                    await stream.finishRequests()
                }
                let result = try await handle(RPCAsyncSequence(stream.responses))
                // The responses ended: whatever the producer still wanted to send is moot.
                group.cancelAll()
                return result
            }
        }
    }
}
