// The server side's transport-agnostic half: a handler sees a `ServerContext` and typed messages
// (or typed message streams); `Route` erases the types to bytes so a transport can dispatch on
// `:path` alone. Unary routes keep a handler of their own, without stream objects, because they
// are the hot path.
import Synchronization

/// What a handler knows about its call, and where it puts response metadata.
public final class ServerContext: Sendable {
    /// The full method path, e.g. `/order_service.OrderService/PlaceOrder`.
    public let path: String
    /// The client's custom headers (`-bin` values already base64-decoded).
    public let requestMetadata: Metadata
    /// When the client stops waiting (from `grpc-timeout`); the handler's task is cancelled then.
    public let deadline: ContinuousClock.Instant?
    private let response = Mutex<(headers: Metadata, trailers: Metadata)>((Metadata(), Metadata()))

    public init(path: String, requestMetadata: Metadata, deadline: ContinuousClock.Instant?) {
        self.path = path
        self.requestMetadata = requestMetadata
        self.deadline = deadline
    }

    /// Adds a response header; sent with the response if the handler succeeds.
    public func addResponseHeader(_ name: String, _ value: Metadata.Value) {
        response.withLock { $0.headers.add(name, value) }
    }

    /// Adds a trailer, sent with the status whatever the outcome.
    public func addTrailer(_ name: String, _ value: Metadata.Value) {
        response.withLock { $0.trailers.add(name, value) }
    }

    /// The response metadata the handler set, for the transport.
    public var responseMetadata: (headers: Metadata, trailers: Metadata) {
        response.withLock { $0 }
    }
}

/// A method bound to its implementation, with the message types erased to bytes so a transport
/// can dispatch on `:path` alone.
public struct Route: Sendable {
    /// How a transport runs the handler.
    public enum Handler: Sendable {
        /// One request in, one response out: no stream objects on the hot path.
        case unary(@Sendable (_ request: [UInt8], _ context: ServerContext) async throws(RPCError) -> [UInt8])
        /// Every other kind: requests come from the source (ended by the client's half-close),
        /// responses go to the sink; returning ends the call with OK.
        case streaming(@Sendable (_ requests: any MessageSource, _ responses: any MessageSink,
                                  _ context: ServerContext) async throws(RPCError) -> Void)
    }

    public let path: String
    public let kind: RPCKind
    public let handler: Handler

    /// A unary method.
    public init<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        precondition(method.kind == .unary, "\(method.path) is not unary")
        path = method.path
        kind = .unary
        self.handler = .unary { bytes, context throws(RPCError) in
            let request: Request
            do {
                request = try Request(serializedBytes: bytes)
            } catch {
                // As grpc-go and grpc-java do: a request we cannot parse is INTERNAL.
                throw RPCError(.internal, "\(error)")
            }
            do {
                return try await handler(request, context).serializedBytes()
            } catch {
                throw RPCError(from: error)
            }
        }
    }

    /// A server-streaming method: one request, any number of responses.
    public init<Request, Response>(
        serverStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self.init(method, expecting: .serverStreaming) { requests, responses, context in
            let request = try await RPCAsyncSequence<Request>(requests).single(path: method.path)
            try await handler(request, RPCWriter(responses), context)
        }
    }

    /// A client-streaming method: any number of requests, one response.
    public init<Request, Response>(
        clientStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (RPCAsyncSequence<Request>, ServerContext) async throws -> Response
    ) {
        self.init(method, expecting: .clientStreaming) { requests, responses, context in
            let response = try await handler(RPCAsyncSequence(requests), context)
            try await responses.write(response.serializedBytes())
        }
    }

    /// A bidirectional-streaming method: both sides send any number of messages.
    public init<Request, Response>(
        bidirectionalStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (RPCAsyncSequence<Request>, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self.init(method, expecting: .bidirectionalStreaming) { requests, responses, context in
            try await handler(RPCAsyncSequence(requests), RPCWriter(responses), context)
        }
    }

    private init<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, expecting kind: RPCKind,
        _ body: @escaping @Sendable (any MessageSource, any MessageSink, ServerContext) async throws -> Void
    ) {
        precondition(method.kind == kind, "\(method.path) is \(method.kind), not \(kind)")
        path = method.path
        self.kind = kind
        handler = .streaming { requests, responses, context throws(RPCError) in
            do {
                try await body(requests, responses, context)
            } catch {
                throw RPCError(from: error)
            }
        }
    }
}

/// A service's name and its routes.
public struct ServiceDefinition: Sendable {
    public let name: String
    public let routes: [Route]

    public init(name: String, routes: [Route]) {
        self.name = name
        self.routes = routes
    }
}

/// Finds the route for a `:path`. Built once, read concurrently by every connection.
public struct Router: Sendable {
    private let routes: [String: Route]
    /// Names of the registered services (the health service reports each).
    public let serviceNames: [String]

    public init(_ services: [ServiceDefinition]) {
        var routes: [String: Route] = [:]
        for service in services {
            for route in service.routes {
                precondition(routes[route.path] == nil, "\(route.path) registered twice")
                routes[route.path] = route
            }
        }
        self.routes = routes
        serviceNames = services.map(\.name)
    }

    public func route(for path: String) -> Route? { routes[path] }

    /// Every route, for tools that list what is served.
    public var allRoutes: [Route] { Array(routes.values) }
}
