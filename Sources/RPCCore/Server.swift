// The server side's transport-agnostic half: a handler sees a `ServerContext` and typed messages
// (or typed message streams); `Route` erases the types to bytes so a transport can dispatch on
// `:path` alone. Unary routes keep a handler of their own, without stream objects, because they
// are the hot path.
//
// Interceptors run before every handler of a router, with the decoded request when the call has
// exactly one (unary and server streaming) and nil otherwise, so a policy such as authorization
// is enforced in one place for every service. One may also scope the rest of the call (a trace
// context as a task-local value, so that every log line and outgoing call of the handler carries
// it). A route is bound to its router's interceptors once, when the router is built: the
// transport calls the bound handler and knows nothing of them. The router numbers its methods, so
// that a transport's per-method counters are array slots rather than dictionary entries.
import Synchronization

/// What a handler knows about its call, and where it puts response metadata.
public final class ServerContext: Sendable {
    /// The full method path, e.g. `/order_service.OrderService/PlaceOrder`.
    public let path: String
    /// The client's custom headers (`-bin` values already base64-decoded).
    public let requestMetadata: Metadata
    /// When the client stops waiting (from `grpc-timeout`); the handler's task is cancelled then.
    public let deadline: ContinuousClock.Instant?
    /// The client's address as the transport knows it (an IP address for HTTP/2), for logs.
    public let remotePeer: String
    /// When the transport received the call's headers: the call's duration counts from here.
    public let started: ContinuousClock.Instant
    private let response = Mutex<(headers: Metadata, trailers: Metadata)>((Metadata(), Metadata()))
    private let values = Mutex<[ObjectIdentifier: any Sendable]>([:])

    public init(path: String, requestMetadata: Metadata, deadline: ContinuousClock.Instant?,
                remotePeer: String = "", started: ContinuousClock.Instant = .now) {
        self.path = path
        self.requestMetadata = requestMetadata
        self.deadline = deadline
        self.remotePeer = remotePeer
        self.started = started
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

    /// What interceptors learned about the call (the caller's identity, say), for the handler.
    public subscript<Key: ServerContextKey>(_ key: Key.Type) -> Key.Value? {
        get { values.withLock { $0[ObjectIdentifier(key)] as? Key.Value } }
        set { values.withLock { $0[ObjectIdentifier(key)] = newValue } }
    }
}

/// A typed slot of `ServerContext`, declared by whoever fills it.
public protocol ServerContextKey {
    associatedtype Value: Sendable
}

/// Runs around the handlers of a router: before (throwing refuses the call with that status) and
/// after (with the call's status, whether the handler ran or was refused).
public protocol ServerInterceptor: Sendable {
    /// `request` is the decoded request of a unary or server-streaming call, nil for client and
    /// bidirectional streaming (whose requests the handler reads).
    func intercept(_ request: (any GRPCMessage)?, context: ServerContext) async throws(RPCError)
    /// The call is over with `status` (OK, the handler's error, an interceptor's refusal, or a
    /// request that could not be decoded, when `intercept` never ran); `request` as `intercept`
    /// saw it, `response` a unary call's response when it succeeded (made only when asked for:
    /// boxing it costs a call that no interceptor reads it for).
    func finished(_ status: RPCError, request: (any GRPCMessage)?, response: @autoclosure () -> (any GRPCMessage)?,
                  context: ServerContext)
    /// Runs the whole call (every interceptor's `intercept` and `finished`, and the handler)
    /// inside `call`: where an interceptor binds task-local values for the call's duration.
    /// Scopes run on their caller's executor (`nonisolated(nonsending)`): a switch of executor
    /// per scope cost a third of an intercepted call (BENCHMARKS.md, "Operations").
    nonisolated(nonsending) func scope<Result>(_ context: ServerContext,
                                               _ call: nonisolated(nonsending) () async throws -> Result) async throws -> Result
}

extension ServerInterceptor {
    public func finished(_ status: RPCError, request: (any GRPCMessage)?, response: @autoclosure () -> (any GRPCMessage)?,
                         context: ServerContext) {}
    nonisolated(nonsending) public func scope<Result>(_ context: ServerContext,
                                                      _ call: nonisolated(nonsending) () async throws -> Result) async throws -> Result {
        try await call()
    }
}

extension [any ServerInterceptor] {
    /// Runs `body` after every interceptor let the call through, and tells them how it ended,
    /// all inside every interceptor's scope. When the handler handed its `responses` over, the
    /// call has not ended with it: they hear of the end when it comes.
    nonisolated(nonsending) func around<Result>(_ request: (any GRPCMessage)?, _ context: ServerContext,
                                                responses: (any MessageSink)? = nil,
                                                _ body: nonisolated(nonsending) () async throws -> Result) async throws(RPCError) -> Result {
        do {
            return try await scoped(from: startIndex, context) {
                do {
                    for interceptor in self { try await interceptor.intercept(request, context: context) }
                    let result = try await body()
                    if let handedOver = responses?.handedOver {
                        handedOver.whenEnded { status in tellFinished(status, request: request, context) }
                        return result
                    }
                    for interceptor in self {
                        interceptor.finished(RPCError(.ok), request: request, response: result as? any GRPCMessage, context: context)
                    }
                    return result
                } catch {
                    let status = RPCError(from: error)
                    tellFinished(status, request: request, context)
                    throw status
                }
            }
        } catch {
            throw RPCError(from: error)
        }
    }

    /// The call failed before the interceptors could see it (its request did not decode).
    func failedBeforeIntercepting(_ status: RPCError, _ context: ServerContext) -> RPCError {
        tellFinished(status, request: nil, context)
        return status
    }

    /// Every interceptor hears that the call ended with `status` (and no response).
    private func tellFinished(_ status: RPCError, request: (any GRPCMessage)?, _ context: ServerContext) {
        for interceptor in self { interceptor.finished(status, request: request, response: nil, context: context) }
    }

    /// `call` inside the scopes of the interceptors from `index` on, the first outermost.
    nonisolated(nonsending) private func scoped<Result>(from index: Int, _ context: ServerContext,
                                                        _ call: nonisolated(nonsending) () async throws -> Result) async throws -> Result {
        guard index < endIndex else { return try await call() }
        return try await self[index].scope(context) { try await scoped(from: index + 1, context, call) }
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
    /// The route's number in its router (0 ..< `Router.methods.count`).
    public fileprivate(set) var methodIndex = 0
    /// The handler, bound to the interceptors of the router it is in.
    public let handler: Handler
    private let bind: @Sendable ([any ServerInterceptor]) -> Handler

    private init(path: String, kind: RPCKind, bind: @escaping @Sendable ([any ServerInterceptor]) -> Handler,
                 interceptors: [any ServerInterceptor] = []) {
        self.path = path
        self.kind = kind
        self.bind = bind
        handler = bind(interceptors)
    }

    /// The same route with `interceptors` running before its handler.
    public func intercepted(by interceptors: [any ServerInterceptor]) -> Route {
        Route(path: path, kind: kind, bind: bind, interceptors: interceptors)
    }

    /// A unary method.
    public init<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        precondition(method.kind == .unary, "\(method.path) is not unary")
        self.init(path: method.path, kind: .unary) { interceptors in
            .unary { bytes, context throws(RPCError) in
                let request: Request
                do {
                    request = try Request(serializedBytes: bytes)
                } catch {
                    // As grpc-go and grpc-java do: a request we cannot parse is INTERNAL.
                    throw interceptors.failedBeforeIntercepting(RPCError(.internal, "\(error)"), context)
                }
                if !interceptors.isEmpty {
                    return try await interceptors.around(request, context) { try await handler(request, context) }.serializedBytes()
                }
                do {
                    return try await handler(request, context).serializedBytes()
                } catch {
                    throw RPCError(from: error)
                }
            }
        }
    }

    /// A server-streaming method: one request, any number of responses.
    public init<Request, Response>(
        serverStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self.init(method, expecting: .serverStreaming) { requests, responses, context, interceptors in
            let request: Request
            do {
                request = try await RPCAsyncSequence<Request>(requests).single(path: method.path)
            } catch {
                throw interceptors.failedBeforeIntercepting(RPCError(from: error), context)
            }
            try await interceptors.around(request, context, responses: responses) {
                try await handler(request, RPCWriter(responses), context)
            }
        }
    }

    /// A client-streaming method: any number of requests, one response.
    public init<Request, Response>(
        clientStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (RPCAsyncSequence<Request>, ServerContext) async throws -> Response
    ) {
        self.init(method, expecting: .clientStreaming) { requests, responses, context, interceptors in
            let response = try await interceptors.around(nil, context) { try await handler(RPCAsyncSequence(requests), context) }
            try await responses.write(response.serializedBytes())
        }
    }

    /// A bidirectional-streaming method: both sides send any number of messages.
    public init<Request, Response>(
        bidirectionalStreaming method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (RPCAsyncSequence<Request>, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self.init(method, expecting: .bidirectionalStreaming) { requests, responses, context, interceptors in
            try await interceptors.around(nil, context, responses: responses) {
                try await handler(RPCAsyncSequence(requests), RPCWriter(responses), context)
            }
        }
    }

    private init<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, expecting kind: RPCKind,
        _ body: @escaping @Sendable (any MessageSource, any MessageSink, ServerContext, [any ServerInterceptor]) async throws -> Void
    ) {
        precondition(method.kind == kind, "\(method.path) is \(method.kind), not \(kind)")
        self.init(path: method.path, kind: kind) { interceptors in
            .streaming { requests, responses, context throws(RPCError) in
                do {
                    try await body(requests, responses, context, interceptors)
                } catch {
                    throw RPCError(from: error)
                }
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
    /// Every route, numbered: `methods[route.methodIndex]` is `route`.
    public let methods: [Route]
    /// Names of the registered services (the health service reports each).
    public let serviceNames: [String]

    /// `interceptors` run, in order, before every handler of every service.
    public init(_ services: [ServiceDefinition], interceptors: [any ServerInterceptor] = []) {
        var routes: [String: Route] = [:]
        var methods: [Route] = []
        for service in services {
            for route in service.routes {
                precondition(routes[route.path] == nil, "\(route.path) registered twice")
                var bound = interceptors.isEmpty ? route : route.intercepted(by: interceptors)
                bound.methodIndex = methods.count
                methods.append(bound)
                routes[route.path] = bound
            }
        }
        self.routes = routes
        self.methods = methods
        serviceNames = services.map(\.name)
    }

    public func route(for path: String) -> Route? { routes[path] }
}
