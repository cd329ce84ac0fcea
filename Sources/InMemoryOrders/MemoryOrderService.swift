// OrderService from memory with exactly the semantics of the reference peers in shared/peers
// (ids order_1, order_2, ...; PLACED; NOT_FOUND; COULD_NOT_CANCEL). It measures and tests the
// transport: the benchmark and interop servers serve it; the platform's real OrderService keeps
// its orders in Redis.
import PlatformProtos
import Synchronization

/// The in-memory order book: one short critical section per call.
public final class MemoryOrderService: OrderServiceProvider {
    public init() {}

    private struct Order {
        var items: [String]
        var totalPrice: Double
        var status: String
    }

    private let state = Mutex<(lastNumber: Int, orders: [String: Order])>((0, [:]))

    public func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        let id = state.withLock { state in
            state.lastNumber += 1
            let id = "order_\(state.lastNumber)"
            state.orders[id] = Order(items: request.items, totalPrice: request.totalPrice, status: "PLACED")
            return id
        }
        return PlaceOrderResponse(orderId: id, status: "PLACED")
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        guard let order = state.withLock({ $0.orders[request.orderId] }) else {
            throw RPCError(.notFound, "order '\(request.orderId)' not found")
        }
        return GetOrderStatusResponse(orderId: request.orderId, status: order.status, items: order.items, totalPrice: order.totalPrice)
    }

    public func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
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

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        throw RPCError(.unimplemented, "the benchmark server serves the peers' three methods only")
    }
}
