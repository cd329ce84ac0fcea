// grpc-bench-server: order_service.OrderService from memory on our gRPC layer, with exactly the
// semantics of the reference peers (ids order_1, order_2, ...; PLACED; NOT_FOUND;
// COULD_NOT_CANCEL), so h2load loads ours and theirs with identical request bodies.
// It measures the transport, not the platform: no Redis, no validation beyond the peers'.
import ArgumentParser
import GRPCHTTP2
import Logging
import PlatformProtos
import Synchronization

/// The in-memory order book: one short critical section per call.
final class MemoryOrderService: OrderServiceProvider {
    private struct Order {
        var items: [String]
        var totalPrice: Double
        var status: String
    }

    private let state = Mutex<(lastNumber: Int, orders: [String: Order])>((0, [:]))

    func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        let id = state.withLock { state in
            state.lastNumber += 1
            let id = "order_\(state.lastNumber)"
            state.orders[id] = Order(items: request.items, totalPrice: request.totalPrice, status: "PLACED")
            return id
        }
        return PlaceOrderResponse(orderId: id, status: "PLACED")
    }

    func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        guard let order = state.withLock({ $0.orders[request.orderId] }) else {
            throw RPCError(.notFound, "order '\(request.orderId)' not found")
        }
        return GetOrderStatusResponse(orderId: request.orderId, status: order.status, items: order.items, totalPrice: order.totalPrice)
    }

    func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        let status = try state.withLock { state throws(RPCError) -> String in
            guard let order = state.orders[request.orderId] else {
                throw RPCError(.notFound, "order '\(request.orderId)' not found")
            }
            guard order.status == "PLACED" else { return "COULD_NOT_CANCEL" }
            state.orders[request.orderId]?.status = "CANCELED"
            return "CANCELED"
        }
        return CancelOrderResponse(orderId: request.orderId, status: status)
    }

    func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        throw RPCError(.unimplemented, "the benchmark server serves the peers' three methods only")
    }
}

@main
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-bench-server",
        abstract: "OrderService from memory on our gRPC layer, for transport benchmarks.")

    @Option(help: "Port to listen on.") var port = 60051
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Event loop threads (default: one per core).") var loops: Int?

    func run() async throws {
        var configuration = ServerConfiguration(host: host, port: port)
        if let loops { configuration.loopCount = loops }
        var logger = Logger(label: "grpc-bench-server")
        logger.logLevel = .info
        let server = GRPCServer(configuration: configuration, services: [MemoryOrderService().service], logger: logger)
        try server.start()
        await server.runUntilTerminated()
    }
}
