// OrderService: orders in Redis, every change an atomic Lua script.
//
// An order is a hash `order:<id>` plus a list `order:<id>:items`; ids come from INCR on
// `orders:seq`, so replicas never collide. Status changes are check-and-set scripts: cancelling
// and the restaurant's decision test the current status and change it in one step, and the
// decision appends ORDER_ACCEPTED/ORDER_REJECTED to the event stream and publishes it in that same
// step. Delivery stages arrive as events (DRIVER_ASSIGNED, DELIVERY_STATUS) through an
// EventConsumer; GetOrderStatus catches up first, so a client that just updated a delivery reads
// the stage it set.
import Logging
import PlatformCommon
import PlatformProtos
import RedisClient

/// The OrderService implementation.
public struct OrderServiceLogic: OrderServiceProvider {
    public static let maxItems = 1000
    public static let maxItemLength = 512

    private let redis: RedisClient
    private let events: EventConsumer
    private let logger: Logger

    public init(redis: RedisClient, logger: Logger) {
        self.redis = redis
        self.logger = logger
        events = EventConsumer(name: "order_service", redis: redis, logger: logger) { events throws(RPCError) in
            try await Self.apply(events, redis: redis)
        }
    }

    /// Starts following delivery events.
    public func start() async { await events.start() }
    public func stop() async { await events.stop() }

    public func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        try Identifier.validate(request.customerId, field: "customer_id")
        if !request.restaurantId.isEmpty { try Identifier.validate(request.restaurantId, field: "restaurant_id") }
        guard !request.items.isEmpty else { throw RPCError(.invalidArgument, "an order needs at least one item") }
        guard request.items.count <= Self.maxItems else {
            throw RPCError(.invalidArgument, "an order has at most \(Self.maxItems) items")
        }
        guard request.items.allSatisfy({ !$0.isEmpty && $0.utf8.count <= Self.maxItemLength }) else {
            throw RPCError(.invalidArgument, "items must be 1 to \(Self.maxItemLength) bytes each")
        }
        try validateAmount(request.totalPrice, field: "total_price")
        let reply = try await redis.script(Scripts.place, arguments:
            [request.customerId, "\(request.totalPrice)", request.restaurantId] + request.items)
        guard let id = reply.string else { throw RPCError(.internal, "unexpected reply placing an order") }
        return PlaceOrderResponse(orderId: id, status: OrderStatus.placed.rawValue)
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try await events.catchUp()
        let reply = try await redis.script(Scripts.get, arguments: [request.orderId])
        guard let fields = reply.array, fields.count == 3, let status = fields[0].string else {
            throw RPCError(.notFound, "order \(request.orderId) not found")
        }
        return GetOrderStatusResponse(
            orderId: request.orderId, status: status,
            items: (fields[2].array ?? []).compactMap(\.string),
            totalPrice: fields[1].string.flatMap(Double.init) ?? 0)
    }

    public func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        let reply = try scriptOutcome(await redis.script(Scripts.cancel, arguments: [request.orderId]))
        return CancelOrderResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        guard request.decision == OrderStatus.accepted.rawValue || request.decision == OrderStatus.rejected.rawValue else {
            throw RPCError(.invalidArgument, "decision must be ACCEPTED or REJECTED")
        }
        let reply = try scriptOutcome(await redis.script(Scripts.decide, arguments:
            [request.orderId, request.restaurantId, request.decision]))
        logger.info("order decided", metadata: ["order": "\(request.orderId)", "decision": "\(reply.string ?? "")"])
        return RecordRestaurantDecisionResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    /// Shows delivery stages on the orders, in event order. Stages only move an order in delivery.
    static func apply(_ events: [PlatformEvent], redis: RedisClient) async throws(RPCError) {
        var arguments: [String] = []
        for event in events {
            let status: OrderStatus
            switch event.kind {
            case .driverAssigned:
                status = .assigned
            case .deliveryStatus:
                guard let stage = event.detail.flatMap(DeliveryStatus.init(rawValue:)) else { continue }
                status = stage.orderStatus
            case .orderAccepted, .orderRejected, .orderCanceled:
                continue  // our own events: the state changed with them
            }
            arguments += [event.orderID, status.rawValue]
        }
        if !arguments.isEmpty { _ = try await redis.script(Scripts.applyDeliveryStages, arguments: arguments) }
    }
}

/// The Lua scripts; `order:` and `:items` are OrderKeys' names.
enum Scripts {
    static let place = """
        local id = 'order_' .. redis.call('INCR', '\(OrderKeys.sequence)')
        local key = '\(OrderKeys.prefix)' .. id
        redis.call('HSET', key, 'customer_id', ARGV[1], 'total_price', ARGV[2], 'restaurant_id', ARGV[3], 'status', 'PLACED')
        redis.call('RPUSH', key .. '\(OrderKeys.itemsSuffix)', unpack(ARGV, 4))
        return id
        """

    static let get = """
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local fields = redis.call('HMGET', key, 'status', 'total_price')
        if not fields[1] then return false end
        return {fields[1], fields[2], redis.call('LRANGE', key .. '\(OrderKeys.itemsSuffix)', 0, -1)}
        """

    static let cancel = """
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local status = redis.call('HGET', key, 'status')
        if not status then return {'ERR', 'NOT_FOUND:order ' .. ARGV[1] .. ' not found'} end
        if status ~= 'PLACED' then return 'COULD_NOT_CANCEL' end
        redis.call('HSET', key, 'status', 'CANCELED')
        local event = 'ORDER_CANCELED:' .. ARGV[1]
        \(publishEventLua)
        return 'CANCELED'
        """

    /// ARGV: order id, restaurant id, ACCEPTED or REJECTED.
    static let decide = """
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'decision', 'decided_by')
        local status = fields[1]
        if not status then return {'ERR', 'NOT_FOUND:order ' .. ARGV[1] .. ' not found'} end
        if fields[2] and fields[2] ~= '' and fields[2] ~= ARGV[2] then
            return {'ERR', 'PERMISSION_DENIED:order ' .. ARGV[1] .. ' was placed with restaurant ' .. fields[2]}
        end
        if status == 'PLACED' then
            redis.call('HSET', key, 'status', ARGV[3], 'decision', ARGV[3], 'decided_by', ARGV[2])
            local event = (ARGV[3] == 'ACCEPTED' and 'ORDER_ACCEPTED:' or 'ORDER_REJECTED:') .. ARGV[1]
            \(publishEventLua)
            return ARGV[3]
        end
        if fields[3] == ARGV[3] and fields[4] == ARGV[2] then return ARGV[3] end
        return {'ERR', 'FAILED_PRECONDITION:order ' .. ARGV[1] .. ' is ' .. status .. ', not PLACED'}
        """

    /// ARGV: order id, new status, order id, new status, ... Only an order in delivery moves;
    /// DELIVERED is final.
    static let applyDeliveryStages = """
        for i = 1, #ARGV, 2 do
            local key = '\(OrderKeys.prefix)' .. ARGV[i]
            local status = redis.call('HGET', key, 'status')
            if status == 'ACCEPTED' or status == 'ASSIGNED' or status == 'PICKED_UP'
                or status == 'OUT_FOR_DELIVERY' or status == 'DELIVERY_FAILED' then
                redis.call('HSET', key, 'status', ARGV[i + 1])
            end
        end
        return 1
        """
}
