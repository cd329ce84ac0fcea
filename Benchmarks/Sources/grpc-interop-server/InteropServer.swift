// grpc-interop-server: the server that the Python grpcio interoperability tests call.
//
// It serves the peers' in-memory OrderService and interop.streams.StreamTest (all four RPC kinds,
// StreamTestService.swift), grpc.health.v1 (Check and Watch) and server reflection. OrderService has behaviour that a test asks for
// through request metadata, so every case the spec names can be provoked from a standard client:
//   x-sleep-ms: N            the handler waits N ms first (deadlines, cancellation, concurrency)
//   x-fail-code: N           the call fails with status N ...
//   x-fail-message: TEXT     ... and this message (any UTF-8; it is percent-encoded on the wire)
//   x-echo-*, *-bin          echoed back as response headers and as trailers (metadata round trip)
// It prints "listening on PORT" once it accepts connections, and shuts down on SIGTERM.
import ArgumentParser
import BenchProtos
import GRPCHTTP2
import GRPCServices
import InMemoryOrders
import Logging
import PlatformProtos

/// Wraps the in-memory service with the metadata-driven behaviour above.
struct InteropOrderService: OrderServiceProvider {
    let orders = MemoryOrderService()

    private func prepare(_ context: ServerContext) async throws {
        for (name, value) in context.requestMetadata where name.hasPrefix("x-echo-") || name.hasSuffix("-bin") {
            context.addResponseHeader(name, value)
            context.addTrailer(name, value)
        }
        if let sleep = context.requestMetadata["x-sleep-ms"].flatMap(Int.init) {
            try await Task.sleep(for: .milliseconds(sleep))
        }
        if let code = context.requestMetadata["x-fail-code"].flatMap(Int.init).flatMap(StatusCode.init(rawValue:)) {
            throw RPCError(code, context.requestMetadata["x-fail-message"] ?? "")
        }
    }

    func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        try await prepare(context)
        return try await orders.placeOrder(request, context: context)
    }

    func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        try await prepare(context)
        return try await orders.getOrderStatus(request, context: context)
    }

    func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        try await prepare(context)
        return try await orders.cancelOrder(request, context: context)
    }

    func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        try await prepare(context)
        return try await orders.recordRestaurantDecision(request, context: context)
    }

    func recordOrderReady(_ request: RecordOrderReadyRequest, context: ServerContext) async throws -> RecordOrderReadyResponse {
        try await prepare(context)
        return try await orders.recordOrderReady(request, context: context)
    }

    func listOrders(_ request: ListOrdersRequest, context: ServerContext) async throws -> ListOrdersResponse {
        try await prepare(context)
        return try await orders.listOrders(request, context: context)
    }

    func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        try await prepare(context)
        try await orders.watchOrder(request, responses: responses, context: context)
    }
}

@main
struct InteropServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-interop-server",
        abstract: "The server the grpcio interoperability tests call.")

    @Option(help: "Port to listen on (0: a free one, printed).") var port = 0
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Largest request message in bytes.") var maxMessageSize = 4 * 1024 * 1024
    @Option(help: "Idle connection timeout in milliseconds.") var idleTimeoutMs = 300_000
    @Option(help: "Shutdown grace period in milliseconds.") var gracePeriodMs = 5_000
    @Option(help: "Maximum concurrent connections.") var maxConnections = 4096

    func run() async throws {
        var configuration = ServerConfiguration(host: host, port: port)
        configuration.maxMessageSize = maxMessageSize
        configuration.idleTimeout = .milliseconds(idleTimeoutMs)
        configuration.shutdownGracePeriod = .milliseconds(gracePeriodMs)
        configuration.maxConnections = maxConnections
        var logger = Logger(label: "grpc-interop-server")
        logger.logLevel = .warning
        let services = [InteropOrderService().service, StreamTestService().service]
        let health = HealthService(services: services.map(\.name))
        let reflection = ReflectionService(files: PlatformProtosDescriptors.all + BenchProtosDescriptors.all,
                                           served: services.map(\.name))
        let server = GRPCServer(configuration: configuration, services: services + [health.service] + reflection.services,
                                logger: logger)
        try server.start()
        // Unbuffered, so the test that started us sees it at once.
        let line = "listening on \(server.port)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        await server.runUntilTerminated(beforeShutdown: { health.enterShutdown() })
    }
}

#if canImport(Glibc)
import Glibc
#endif
