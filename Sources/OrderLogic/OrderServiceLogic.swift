// OrderService: orders in Redis, every change an atomic Lua script.
//
// An order is a hash `order:<id>` plus a list `order:<id>:items`; ids come from INCR on
// `orders:seq`, so replicas never collide. Status changes are check-and-set scripts: cancelling
// and the restaurant's decision test the current status and change it in one step, and the
// decision appends ORDER_ACCEPTED/ORDER_REJECTED to the event stream and publishes it in that same
// step. Delivery stages arrive as events (DRIVER_ASSIGNED, DELIVERY_STATUS) through the service's
// consumer group (EventConsumer), whose replicas apply them in any order: every change records
// the id of its event in the order (`last_event`), the projection skips an event older than that,
// and each delivery event carries its driver, so the newest event alone decides what the order
// shows. GetOrderStatus's script first applies, with the same Lua, the delivery events the group
// has not acknowledged yet (in the same round trip), so a client that just updated a delivery
// reads the stage it set without a separate read of the stream.
//
// WatchOrder subscribes to the process's EventHub first, then catches up and reads the order
// with its `last_event`: every event the subscription delivers with a later id is a change the
// snapshot does not show yet, and applying it with the same rules as the projection
// (`OrderStatus.after`) gives the next update. So no change between the snapshot and the stream
// is missed or repeated.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient

/// The OrderService implementation; it also tells the access policy who takes part in an order.
public struct OrderServiceLogic: OrderServiceProvider, OrderPartiesLookup {
    public static let maxItems = 1000
    /// The order service's consumer group (its replicas share it).
    static let consumerGroup = "order_service"
    public static let maxItemLength = 512

    private let redis: RedisClient
    private let events: EventConsumer
    private let hub: EventHub
    private let logger: Logger

    public init(redis: RedisClient, logger: Logger) {
        self.init(redis: redis, logger: logger, consumerGroup: Self.consumerGroup)
    }

    /// `consumerGroup`: another group than the service's own (a test's reader that consumes
    /// nothing but must not disturb the service).
    init(redis: RedisClient, logger: Logger, consumerGroup: String) {
        self.redis = redis
        self.logger = logger
        hub = EventHub(redis: redis, logger: logger)
        events = EventConsumer(group: consumerGroup, redis: redis, logger: logger) { events throws(RPCError) in
            try await Self.apply(events, redis: redis)
        }
    }

    /// Starts following delivery events.
    public func start() async { await events.start() }
    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }
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
        let reply = try await redis.change(Scripts.place, arguments:
            [request.customerId, "\(request.totalPrice)", request.restaurantId] + request.items)
        if let id = reply.string { logger.debug("order placed", metadata: ["order": "\(id)"]) }
        guard let id = reply.string else { throw RPCError(.internal, "unexpected reply placing an order") }
        return PlaceOrderResponse(orderId: id, status: OrderStatus.placed.rawValue)
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        // One round trip: the script applies the delivery events the consumer group has not
        // acknowledged yet, then reads. Only when more are unapplied than it takes at once does
        // the consumer catch up first; after that a plain read sees every earlier write.
        var reply = try await redis.script(Scripts.get, keys: [PlatformEvents.stream],
                                           arguments: [request.orderId, events.group, Scripts.applyUnapplied])
        if reply.string == Scripts.behind {
            try await events.catchUp()
            reply = try await redis.script(Scripts.get, keys: [PlatformEvents.stream], arguments: [request.orderId, events.group, ""])
        }
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
        let reply = try scriptOutcome(await redis.change(Scripts.cancel, arguments: [request.orderId]))
        return CancelOrderResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        guard request.decision == OrderStatus.accepted.rawValue || request.decision == OrderStatus.rejected.rawValue else {
            throw RPCError(.invalidArgument, "decision must be ACCEPTED or REJECTED")
        }
        let reply = try scriptOutcome(await redis.change(Scripts.decide, arguments:
            [request.orderId, request.restaurantId, request.decision]))
        logger.info("order decided", metadata: ["order": "\(request.orderId)", "decision": "\(reply.string ?? "")"])
        return RecordRestaurantDecisionResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    public func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        try Identifier.validate(request.orderId, field: "order_id")
        // Subscribe before reading: whatever happens after the snapshot is then on the subscription.
        let subscription = try await hub.subscribe(.order(request.orderId))
        defer { subscription.cancel() }
        try await events.catchUp()
        let reply = try await redis.script(Scripts.watchSnapshot, arguments: [request.orderId])
        guard let fields = reply.array, fields.count == 5, let statusText = fields[0].string,
              let status = OrderStatus(rawValue: statusText) else {
            throw RPCError(.notFound, "order \(request.orderId) not found")
        }
        var current = OrderUpdate(
            orderId: request.orderId, status: status.rawValue, driverId: fields[1].string ?? "",
            updatedAtUnixMs: 0, restaurantId: fields[2].string ?? "", customerId: fields[3].string ?? "",
            final: status.isFinal)
        let snapshotEvent = fields[4].string.flatMap(StreamID.init) ?? .zero
        current.updatedAtUnixMs = Int64(snapshotEvent.milliseconds)
        try await responses.write(current)
        var state = status
        guard !state.isFinal else { return }
        for try await event in subscription {
            guard let id = event.id, id > snapshotEvent, let next = state.after(event) else { continue }
            state = next
            current.status = next.rawValue
            if let driver = event.driverID { current.driverId = driver }
            current.updatedAtUnixMs = Int64(id.milliseconds)
            current.final = next.isFinal
            try await responses.write(current)
            if next.isFinal { return }
        }
    }

    public func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties? {
        var parties = try await readParties(orderID)
        if caller.role == .driver, let known = parties, known.driver != caller.subject {
            // The driver may have been assigned a moment ago: learn of it before saying no.
            try await events.catchUp()
            parties = try await readParties(orderID)
        }
        return parties
    }

    private func readParties(_ orderID: String) async throws(RPCError) -> OrderParties? {
        let fields = try await redis.command(["HMGET", OrderKeys.prefix + orderID, "customer_id", "restaurant_id", "driver_id"]).array ?? []
        guard fields.count == 3, let customer = fields[0].string else { return nil }
        return OrderParties(customer: customer, restaurant: fields[1].string, driver: fields[2].string)
    }

    /// Shows delivery stages on the orders, in event order. Stages only move an order in
    /// delivery, and an event older than the order's last one is skipped.
    static func apply(_ events: [PlatformEvent], redis: RedisClient) async throws(RPCError) {
        var arguments: [String] = []
        for event in events {
            guard let id = event.id else { continue }
            switch event.kind {
            case .driverAssigned, .deliveryStatus:
                let stage = event.kind == .driverAssigned ? DeliveryStatus.assigned.rawValue : event.detail ?? ""
                arguments += [event.orderID, id.description, stage, event.driverID ?? ""]
            case .orderPlaced, .orderAccepted, .orderRejected, .orderCanceled:
                continue  // our own events: the state changed with them
            }
        }
        if !arguments.isEmpty { _ = try await redis.change(Scripts.applyDeliveryStages, arguments: arguments) }
    }
}

/// The Lua scripts; `order:` and `:items` are OrderKeys' names, the event fields
/// PlatformEvent.Field's.
enum Scripts {
    private typealias Field = PlatformEvent.Field

    static let place = """
        \(eventLua)
        local id = 'order_' .. redis.call('INCR', '\(OrderKeys.sequence)')
        local key = '\(OrderKeys.prefix)' .. id
        local items = {unpack(ARGV, 4)}
        local event = emit('ORDER_PLACED:' .. id, {'\(Field.customer.rawValue)', ARGV[1], '\(Field.restaurant.rawValue)', ARGV[3],
            '\(Field.items.rawValue)', encodeItems(items), '\(Field.total.rawValue)', ARGV[2]}, true)
        redis.call('HSET', key, 'customer_id', ARGV[1], 'total_price', ARGV[2], 'restaurant_id', ARGV[3], 'status', 'PLACED',
            'last_event', event)
        redis.call('RPUSH', key .. '\(OrderKeys.itemsSuffix)', unpack(items))
        return id
        """

    /// What `get` answers when more events are unapplied than it applies in one go.
    static let behind = "BEHIND"
    /// `get`'s ARGV[3] when it is to apply the unapplied events first.
    static let applyUnapplied = "apply"

    /// KEYS[1]: the event stream; ARGV: order id, the consumer group, `applyUnapplied` or ''.
    /// First (unless ARGV[3] is '') applies the delivery events the group has not acknowledged
    /// (at most 256, else answers BEHIND and changes nothing) the way the consumer does; then
    /// returns {status, total, items} or nil. So an order changed a moment ago through the
    /// delivery service reads changed, in one round trip. It acknowledges nothing: a consumer
    /// still applies those events itself (idempotently), with WAIT when configured, so what this
    /// script wrote without a WAIT is never the only copy a failover could lose.
    static let get = """
        \(eventLua)
        \(applyStageLua)
        \(EventConsumer.unappliedLua)
        if ARGV[3] ~= '' then
            local entries = redis.call('XRANGE', KEYS[1], unappliedStart(KEYS[1], ARGV[2]), '+', 'COUNT', 257)
            if #entries == 257 then return '\(behind)' end
            for _, entry in ipairs(entries) do
                local fields, text, driver = entry[2], nil, ''
                for f = 1, #fields, 2 do
                    if fields[f] == '\(Field.text.rawValue)' then text = fields[f + 1] end
                    if fields[f] == '\(Field.driver.rawValue)' then driver = fields[f + 1] end
                end
                local kind, order, detail = string.match(text or '', '^([^:]+):([^:]+):?(.*)$')
                if kind == '\(PlatformEvent.Kind.driverAssigned.rawValue)' then
                    applyStage(order, entry[1], '\(DeliveryStatus.assigned.rawValue)', driver ~= '' and driver or detail)
                elseif kind == '\(PlatformEvent.Kind.deliveryStatus.rawValue)' then
                    applyStage(order, entry[1], detail, driver)
                end
            end
        end
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local fields = redis.call('HMGET', key, 'status', 'total_price')
        if not fields[1] then return false end
        return {fields[1], fields[2], redis.call('LRANGE', key .. '\(OrderKeys.itemsSuffix)', 0, -1)}
        """

    /// ARGV: order id. Returns {status, driver, restaurant, customer, last event id} or nil.
    static let watchSnapshot = """
        local fields = redis.call('HMGET', '\(OrderKeys.prefix)' .. ARGV[1], 'status', 'driver_id', 'restaurant_id', 'customer_id', 'last_event')
        if not fields[1] then return false end
        for i = 2, 5 do fields[i] = fields[i] or '' end
        return fields
        """

    static let cancel = """
        \(eventLua)
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local fields = redis.call('HMGET', key, 'status', 'customer_id', 'restaurant_id')
        local status = fields[1]
        if not status then return {'ERR', 'NOT_FOUND:order ' .. ARGV[1] .. ' not found'} end
        if status ~= 'PLACED' then return 'COULD_NOT_CANCEL' end
        local event = emit('ORDER_CANCELED:' .. ARGV[1], {'\(Field.customer.rawValue)', fields[2] or '', '\(Field.restaurant.rawValue)', fields[3] or ''})
        redis.call('HSET', key, 'status', 'CANCELED', 'last_event', event)
        return 'CANCELED'
        """

    /// ARGV: order id, restaurant id, ACCEPTED or REJECTED.
    static let decide = """
        \(eventLua)
        local key = '\(OrderKeys.prefix)' .. ARGV[1]
        local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'decision', 'decided_by', 'customer_id')
        local status = fields[1]
        if not status then return {'ERR', 'NOT_FOUND:order ' .. ARGV[1] .. ' not found'} end
        if fields[2] and fields[2] ~= '' and fields[2] ~= ARGV[2] then
            return {'ERR', 'PERMISSION_DENIED:order ' .. ARGV[1] .. ' was placed with restaurant ' .. fields[2]}
        end
        if status == 'PLACED' then
            local text = (ARGV[3] == '\(OrderStatus.accepted.rawValue)' and '\(PlatformEvent.Kind.orderAccepted.rawValue):'
                or '\(PlatformEvent.Kind.orderRejected.rawValue):') .. ARGV[1]
            local event = emit(text, {'\(Field.customer.rawValue)', fields[5] or '', '\(Field.restaurant.rawValue)', ARGV[2]})
            redis.call('HSET', key, 'status', ARGV[3], 'decision', ARGV[3], 'decided_by', ARGV[2], 'last_event', event)
            return ARGV[3]
        end
        if fields[3] == ARGV[3] and fields[4] == ARGV[2] then return ARGV[3] end
        return {'ERR', 'FAILED_PRECONDITION:order ' .. ARGV[1] .. ' is ' .. status .. ', not PLACED'}
        """

    /// ARGV: per event, order id, event id, delivery stage, driver; each applied by `applyStage`.
    static let applyDeliveryStages = """
        \(eventLua)
        \(applyStageLua)
        for i = 1, #ARGV, 4 do
            applyStage(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
        end
        return 1
        """

    /// `applyStage(order, event id, stage, driver)`: the projection of one delivery event. Only an
    /// order in delivery moves (DELIVERED is final), and only forwards in the stream: an event at
    /// or before the order's `last_event` is skipped (the same rules as `OrderStatus.after`; its
    /// tables are built from `OrderStatus` and `DeliveryStatus`). Every delivery event carries
    /// its driver, so the newest one alone gives both the stage and the driver: replicas may apply
    /// an order's events in any order.
    private static let applyStageLua = """
        local inDelivery = {\(OrderStatus.allCases.filter(\.isInDelivery).map { "\($0.rawValue) = true" }.joined(separator: ", "))}
        local stages = {\(DeliveryStatus.allCases.map { "\($0.rawValue) = '\($0.orderStatus.rawValue)'" }.joined(separator: ", "))}
        local function applyStage(order, event, stageName, driver)
            local key = '\(OrderKeys.prefix)' .. order
            local fields = redis.call('HMGET', key, 'status', 'last_event')
            local status, last = fields[1], fields[2]
            local newer = not last or older(last, event)
            local stage = stages[stageName]
            if status and newer and inDelivery[status] and stage then
                redis.call('HSET', key, 'status', stage, 'last_event', event)
                if driver ~= '' then redis.call('HSET', key, 'driver_id', driver) end
            end
        end
        """
}
