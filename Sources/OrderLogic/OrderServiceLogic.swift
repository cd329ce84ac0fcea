// OrderService: orders in Redis, every change an atomic Lua script.
//
// An order is a hash plus a list of its items (OrderKeys), tagged with the order's partition so
// that they and the partition's event stream share a Redis Cluster slot; ids come from INCR on
// `orders:seq` before the order is stored, so replicas and shards never collide. Status changes
// are check-and-set scripts (Lua/*.lua): cancelling and the restaurant's decision test the
// current status and change it in one step, and the decision appends ORDER_ACCEPTED /
// ORDER_REJECTED to the partition's stream and publishes it in that same step. Delivery stages arrive as events (DRIVER_ASSIGNED, DELIVERY_STATUS) through the service's
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
        events = EventConsumer(group: consumerGroup, redis: redis, logger: logger) { events, _ throws(RPCError) in
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
        // The id first: it names the partition, and so the keys, the script writes. (With WAIT, so
        // that a failover cannot hand the same number out again.)
        guard let number = try await redis.command(["INCR", OrderKeys.sequence], waitForReplicas: true).int else {
            throw RPCError(.internal, "unexpected reply numbering an order")
        }
        let id = "order_\(number)"
        let keys = OrderKeys(id)
        _ = try scriptOutcome(await redis.change(Scripts.place, keys: [keys.order, keys.items, keys.partition.stream], arguments:
            [id, request.customerId, "\(request.totalPrice)", request.restaurantId] + request.items))
        logger.debug("order placed", metadata: ["order": "\(id)"])
        return PlaceOrderResponse(orderId: id, status: OrderStatus.placed.rawValue)
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        // One round trip: the script applies the delivery events the consumer group has not
        // acknowledged yet, then reads. Only when more are unapplied than it takes at once does
        // the consumer catch up first; after that a plain read sees every earlier write.
        let keys = OrderKeys(request.orderId)
        let getKeys = [keys.partition.stream, keys.order, keys.items]
        var reply = try await redis.script(Scripts.get, keys: getKeys, arguments: [request.orderId, events.group, Scripts.applyUnapplied])
        if reply.string == Scripts.behind {
            try await events.catchUp(keys.partition)
            reply = try await redis.script(Scripts.get, keys: getKeys, arguments: [request.orderId, events.group, ""])
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
        let keys = OrderKeys(request.orderId)
        let reply = try scriptOutcome(await redis.change(Scripts.cancel, keys: [keys.order, keys.partition.stream], arguments: [request.orderId]))
        return CancelOrderResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        guard request.decision == OrderStatus.accepted.rawValue || request.decision == OrderStatus.rejected.rawValue else {
            throw RPCError(.invalidArgument, "decision must be ACCEPTED or REJECTED")
        }
        let keys = OrderKeys(request.orderId)
        let reply = try scriptOutcome(await redis.change(Scripts.decide, keys: [keys.order, keys.partition.stream], arguments:
            [request.orderId, request.restaurantId, request.decision]))
        logger.info("order decided", metadata: ["order": "\(request.orderId)", "decision": "\(reply.string ?? "")"])
        return RecordRestaurantDecisionResponse(orderId: request.orderId, status: reply.string ?? "")
    }

    public func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        try Identifier.validate(request.orderId, field: "order_id")
        // Subscribe before reading: whatever happens after the snapshot is then on the subscription.
        let subscription = try await hub.subscribe(.order(request.orderId))
        defer { subscription.cancel() }
        let keys = OrderKeys(request.orderId)
        try await events.catchUp(keys.partition)
        let reply = try await redis.script(Scripts.watchSnapshot, keys: [keys.order])
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
            try await events.catchUp(OrderPartition(order: orderID))
            parties = try await readParties(orderID)
        }
        return parties
    }

    private func readParties(_ orderID: String) async throws(RPCError) -> OrderParties? {
        let fields = try await redis.command(["HMGET", OrderKeys(orderID).order, "customer_id", "restaurant_id", "driver_id"]).array ?? []
        guard fields.count == 3, let customer = fields[0].string else { return nil }
        return OrderParties(customer: customer, restaurant: fields[1].string, driver: fields[2].string)
    }

    /// Shows delivery stages on the orders. Stages only move an order in delivery, and an event
    /// older than the order's last one is skipped. The events are of one partition.
    static func apply(_ events: [PlatformEvent], redis: RedisClient) async throws(RPCError) {
        var keys: [String] = []
        var arguments: [String] = []
        for event in events {
            guard let id = event.id else { continue }
            switch event.kind {
            case .driverAssigned, .deliveryStatus:
                let stage = event.kind == .driverAssigned ? DeliveryStatus.assigned.rawValue : event.detail ?? ""
                keys.append(OrderKeys(event.orderID).order)
                arguments += [id.description, stage, event.driverID ?? ""]
            case .orderPlaced, .orderAccepted, .orderRejected, .orderCanceled:
                continue  // our own events: the state changed with them
            }
        }
        if !keys.isEmpty { _ = try await redis.change(Scripts.applyDeliveryEvents, keys: keys, arguments: arguments) }
    }
}

/// Where an order lives in Redis: the order service's keys, all with the order's partition tag.
struct OrderKeys {
    /// Counter behind `order_<n>`; untagged (its own slot), and outside the order keys' names, so
    /// no order id can name it.
    static let sequence = "orders:seq"

    let partition: OrderPartition
    /// Hash: customer_id, total_price, restaurant_id, status, decision, decided_by, driver_id,
    /// last_event (the id of the last event applied to it: older ones are skipped).
    let order: String
    /// List of the order's items.
    let items: String

    init(_ id: String) {
        partition = OrderPartition(order: id)
        order = "order:\(partition.tag):\(id)"
        items = order + ":items"
    }
}

/// The functions the service runs: its Lua/*.lua as one library.
enum Scripts {
    static let library = LuaLibrary(
        module: "order", helpers: ["local BEHIND = '\(behind)'", EventLua.unapplied, OrderLua.applyStage],
        functions: ["place": OrderLua.place, "get": OrderLua.get, "watch_snapshot": OrderLua.watchSnapshot,
                    "cancel": OrderLua.cancel, "decide": OrderLua.decide, "apply_delivery_events": OrderLua.applyDeliveryEvents])
    static let place = library.function("place")
    static let get = library.function("get")
    static let watchSnapshot = library.function("watch_snapshot")
    static let cancel = library.function("cancel")
    static let decide = library.function("decide")
    static let applyDeliveryEvents = library.function("apply_delivery_events")

    /// What `get` answers when more events are unapplied than it looks at in one go.
    static let behind = "BEHIND"
    /// `get`'s ARGV[3] when it is to apply the order's unapplied delivery event first.
    static let applyUnapplied = "apply"
}
