// The server side's transport-agnostic half: a handler sees a `ServerContext` and typed messages;
// `Route` erases the types to bytes so a transport can dispatch on `:path` alone.
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

/// A unary method bound to its implementation, with the message types erased to bytes.
public struct Route: Sendable {
    public let path: String
    public let handle: @Sendable (_ request: [UInt8], _ context: ServerContext) async throws(RPCError) -> [UInt8]

    public init<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        path = method.path
        handle = { bytes, context throws(RPCError) in
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
}
