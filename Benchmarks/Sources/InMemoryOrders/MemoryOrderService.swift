// OrderService from memory with exactly the semantics of the reference peers in shared/peers
// (ids order_1, order_2, ...; PLACED; NOT_FOUND; COULD_NOT_CANCEL). It measures and tests the
// transport: the benchmark and interop servers serve it; the platform's real OrderService keeps
// its orders in Redis.
//
// WatchOrder follows one order from memory: the current state first, then every later change in
// order, ending with OK once the order is final. Orders here change only through CancelOrder
// (PLACED -> CANCELED; the restaurant's decision is not served), so a watch of a PLACED order
// waits until it is canceled or the client goes away. Each watcher is an unbounded AsyncStream fed
// under the order book's lock, so updates reach it in the order they happened and none is lost;
// the handler awaits the stream (no polling), and its task's cancellation ends the iteration.
import PlatformProtos
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The in-memory order book: one short critical section per call.
public final class MemoryOrderService: OrderServiceProvider {
    public init() {}

    private struct Order {
        var customerId: String
        var restaurantId: String
        var items: [String]
        var totalPrice: Double
        var status: String
        var updatedAtUnixMs: Int64
    }

    private struct State {
        var lastNumber = 0
        var orders: [String: Order] = [:]
        /// Open watches by order id, then by watcher number.
        var watchers: [String: [Int: AsyncStream<OrderUpdate>.Continuation]] = [:]
        var nextWatcher = 0
    }

    private let state = Mutex(State())

    /// Statuses after which an order can change no more.
    private static let finalStatuses: Set<String> = ["DELIVERED", "REJECTED", "CANCELED"]

    private static func update(_ id: String, _ order: Order) -> OrderUpdate {
        OrderUpdate(orderId: id, status: order.status, updatedAtUnixMs: order.updatedAtUnixMs,
                    restaurantId: order.restaurantId, customerId: order.customerId,
                    final: finalStatuses.contains(order.status))
    }

    private static func nowUnixMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        let now = Self.nowUnixMs()
        let id = state.withLock { state in
            state.lastNumber += 1
            let id = "order_\(state.lastNumber)"
            state.orders[id] = Order(customerId: request.customerId, restaurantId: request.restaurantId,
                                     items: request.items, totalPrice: request.totalPrice, status: "PLACED",
                                     updatedAtUnixMs: now)
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
        let now = Self.nowUnixMs()
        let status = try state.withLock { state throws(RPCError) -> String in
            guard var order = state.orders[request.orderId] else {
                throw RPCError(.notFound, "order '\(request.orderId)' not found")
            }
            guard order.status == "PLACED" else { return "COULD_NOT_CANCEL" }
            order.status = "CANCELED"
            order.updatedAtUnixMs = now
            state.orders[request.orderId] = order
            Self.publish(request.orderId, order, in: &state)
            return "CANCELED"
        }
        return CancelOrderResponse(orderId: request.orderId, status: status)
    }

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        throw RPCError(.unimplemented, "the benchmark server serves the peers' three methods only")
    }

    public func recordOrderReady(_ request: RecordOrderReadyRequest, context: ServerContext) async throws -> RecordOrderReadyResponse {
        throw RPCError(.unimplemented, "the benchmark server serves the peers' three methods only")
    }

    public func listOrders(_ request: ListOrdersRequest, context: ServerContext) async throws -> ListOrdersResponse {
        throw RPCError(.unimplemented, "the benchmark server serves the peers' three methods only")
    }

    public func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        let (updates, continuation) = AsyncStream<OrderUpdate>.makeStream(bufferingPolicy: .unbounded)
        // The current state and the registration happen under one lock, so no change can fall
        // between them.
        let watcher = try state.withLock { state throws(RPCError) -> Int? in
            guard let order = state.orders[request.orderId] else {
                throw RPCError(.notFound, "order '\(request.orderId)' not found")
            }
            let current = Self.update(request.orderId, order)
            continuation.yield(current)
            if current.final {
                continuation.finish()
                return nil
            }
            state.nextWatcher += 1
            state.watchers[request.orderId, default: [:]][state.nextWatcher] = continuation
            return state.nextWatcher
        }
        defer {
            if let watcher {
                state.withLock { state in
                    state.watchers[request.orderId]?[watcher] = nil
                    if state.watchers[request.orderId]?.isEmpty == true { state.watchers[request.orderId] = nil }
                }
            }
        }
        for await update in updates {
            try await responses.write(update)
            if update.final { return }
        }
        // The stream ends early only when the handler's task was cancelled (the call is gone).
        try Task.checkCancellation()
    }

    /// Tells the order's watchers about its new state (under the lock, so in order); a final
    /// state ends their streams.
    private static func publish(_ id: String, _ order: Order, in state: inout State) {
        guard let watchers = state.watchers[id] else { return }
        let update = update(id, order)
        for continuation in watchers.values {
            continuation.yield(update)
            if update.final { continuation.finish() }
        }
        if update.final { state.watchers[id] = nil }
    }
}
