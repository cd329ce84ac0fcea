// OrderService: orders in an OrderStore (Redis: every change an atomic Lua function).
//
// An order is a hash plus a list of its items (OrderKeys), tagged with the order's partition so
// that they and the partition's event stream share a Redis Cluster slot; ids come from INCR on
// `orders:seq` before the order is stored, so replicas and shards never collide. Status changes
// are check-and-set functions (Lua/*.lua): cancelling and the restaurant's decision test the
// current status and change it in one step, and the decision appends ORDER_ACCEPTED /
// ORDER_REJECTED to the partition's stream and publishes it in that same step. Delivery stages arrive as events (DRIVER_ASSIGNED, DELIVERY_STATUS) through the service's
// consumer group (EventConsumer), whose replicas apply them in any order: every change records
// the id of its event in the order (`last_event`), the projection skips an event older than that,
// and each delivery event carries its driver, so the newest event alone decides what the order
// shows. GetOrderStatus's read first applies, with the same Lua, the delivery events the group
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
    public static let maxItemLength = 512
    /// The order service's consumer group (its replicas share it).
    static let consumerGroup = "order_service"

    private let store: any OrderStore
    private let events: any EventCatchUp
    private let consumerGroup: String
    /// The service's own consumer, when it runs one (started and stopped with the service).
    private let consumer: EventConsumer?
    private let hub: EventHub
    private let logger: Logger

    /// The service on Redis: its store, its consumer group and its watchers' hub.
    public init(redis: RedisClient, logger: Logger) {
        self.init(redis: redis, logger: logger, consumerGroup: Self.consumerGroup)
    }

    /// `consumerGroup`: another group than the service's own (a test's reader that consumes
    /// nothing but must not disturb the service).
    init(redis: RedisClient, logger: Logger, consumerGroup: String) {
        let store = RedisOrderStore(redis: redis)
        let consumer = EventConsumer(group: consumerGroup, redis: redis, logger: logger) { events, _ throws(RPCError) in
            do throws(StorageError) { try await store.applyDeliveryEvents(events) } catch { throw RPCError(storage: error) }
        }
        self.init(store: store, events: consumer, consumerGroup: consumerGroup, consumer: consumer,
                  hub: EventHub(redis: redis, logger: logger), logger: logger)
    }

    /// The service on any store; `events` catches up on the events the store's consumers apply.
    init(store: any OrderStore, events: any EventCatchUp, consumerGroup: String = Self.consumerGroup,
         consumer: EventConsumer? = nil, hub: EventHub, logger: Logger) {
        self.store = store
        self.events = events
        self.consumerGroup = consumerGroup
        self.consumer = consumer
        self.hub = hub
        self.logger = logger
    }

    /// Starts following delivery events.
    public func start() async { await consumer?.start() }
    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }
    public func stop() async { await consumer?.stop() }

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
        // The id first: it names the partition, and so the keys, the order is stored under.
        let id = "order_\(try await stored { () async throws(StorageError) in try await store.nextOrderNumber() })"
        let order = NewOrder(id: id, customer: request.customerId, restaurant: request.restaurantId, items: request.items,
                             totalPrice: request.totalPrice)
        guard try await stored({ () async throws(StorageError) in try await store.place(order) }) else {
            throw RPCError(.internal, "order number \(id) was handed out twice")
        }
        logger.debug("order placed", metadata: ["order": "\(id)"])
        return PlaceOrderResponse(orderId: id, status: OrderStatus.placed.rawValue)
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        // One round trip: the store applies the order's delivery event the consumer group has not
        // applied yet, then reads. Only when more are unapplied than it looks through does the
        // consumer catch up first; after that a plain read sees every earlier write.
        var read = try await stored { () async throws(StorageError) in
            try await store.read(id, consumerGroup: consumerGroup, applyingUnapplied: true)
        }
        if read == .behind {
            try await events.catchUp(OrderPartition(order: id))
            read = try await stored { () async throws(StorageError) in
                try await store.read(id, consumerGroup: consumerGroup, applyingUnapplied: false)
            }
        }
        guard case .found(let order) = read else { throw RPCError(.notFound, "order \(id) not found") }
        return GetOrderStatusResponse(orderId: id, status: order.status, items: order.items, totalPrice: order.totalPrice)
    }

    public func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        switch try await stored({ () async throws(StorageError) in try await store.cancel(id) }) {
        case .canceled: return CancelOrderResponse(orderId: id, status: OrderStatus.canceled.rawValue)
        case .notCancelable: return CancelOrderResponse(orderId: id, status: Self.couldNotCancel)
        case .notFound: throw RPCError(.notFound, "order \(id) not found")
        }
    }

    /// What CancelOrder answers for an order past PLACED (the seed's word for it).
    static let couldNotCancel = "COULD_NOT_CANCEL"

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        let id = request.orderId, restaurant = request.restaurantId
        try Identifier.validate(id, field: "order_id")
        try Identifier.validate(restaurant, field: "restaurant_id")
        guard let decision = OrderStatus(rawValue: request.decision), decision == .accepted || decision == .rejected else {
            throw RPCError(.invalidArgument, "decision must be ACCEPTED or REJECTED")
        }
        switch try await stored({ () async throws(StorageError) in try await store.decide(id, restaurant: restaurant, decision: decision) }) {
        case .decided(let status):
            logger.info("order decided", metadata: ["order": "\(id)", "decision": "\(status.rawValue)"])
            return RecordRestaurantDecisionResponse(orderId: id, status: status.rawValue)
        case .notFound:
            throw RPCError(.notFound, "order \(id) not found")
        case .otherRestaurant(let other):
            throw RPCError(.permissionDenied, "order \(id) was placed with restaurant \(other)")
        case .notPlaced(let status):
            throw RPCError(.failedPrecondition, "order \(id) is \(status), not PLACED")
        }
    }

    public func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        // Subscribe before reading: whatever happens after the snapshot is then on the subscription.
        let subscription = try await hub.subscribe(.order(id))
        defer { subscription.cancel() }
        try await events.catchUp(OrderPartition(order: id))
        guard let snapshot = try await stored({ () async throws(StorageError) in try await store.snapshot(id) }) else {
            throw RPCError(.notFound, "order \(id) not found")
        }
        var current = OrderUpdate(
            orderId: id, status: snapshot.status.rawValue, driverId: snapshot.driver,
            updatedAtUnixMs: Int64(snapshot.lastEvent.milliseconds), restaurantId: snapshot.restaurant,
            customerId: snapshot.customer, final: snapshot.status.isFinal)
        try await responses.write(current)
        var state = snapshot.status
        guard !state.isFinal else { return }
        for try await event in subscription {
            guard let eventID = event.id, eventID > snapshot.lastEvent, let next = state.after(event) else { continue }
            state = next
            current.status = next.rawValue
            if let driver = event.driverID { current.driverId = driver }
            current.updatedAtUnixMs = Int64(eventID.milliseconds)
            current.final = next.isFinal
            try await responses.write(current)
            if next.isFinal { return }
        }
    }

    public func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties? {
        var parties = try await stored { () async throws(StorageError) in try await store.parties(orderID) }
        if caller.role == .driver, let known = parties, known.driver != caller.subject {
            // The driver may have been assigned a moment ago: learn of it before saying no.
            try await events.catchUp(OrderPartition(order: orderID))
            parties = try await stored { () async throws(StorageError) in try await store.parties(orderID) }
        }
        return parties
    }
}
