// OrderService: orders in an OrderStore (Redis: every change an atomic Lua function).
//
// An order is a hash plus a list of its items (OrderKeys), tagged with the order's partition so
// that they and the partition's event stream share a Redis Cluster slot; ids come from INCR on
// `orders:seq` before the order is stored, so replicas and shards never collide. An order is
// either the seed's free-text items with the client's total, or menu lines priced from the
// restaurant's menu at that moment and frozen into the order (Pricing.swift), with an optional
// delivery address. A `request_id` makes PlaceOrder idempotent (AIP-155): the first request ties
// it to its order id for a day (a key of its own, claimed atomically), a retry with the same
// fingerprint gets that order back (and stores it, when the first request stopped before doing
// so: the order's EXISTS check makes racing retries store it once), and a different request
// with the same id is INVALID_ARGUMENT. Status changes
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
// WatchOrder follows the order on the process's EventHub first, then catches up and reads the
// order with its `last_event`: every event the hub hands over with a later id is a change the
// snapshot does not show yet, and applying it with the same rules as the projection
// (`OrderStatus.after`) gives the next update. So no change between the snapshot and the stream
// is missed or repeated. After the snapshot the call is an OrderWatch, with no task of its own.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient

/// The OrderService implementation; it also tells the access policy who takes part in an order.
public struct OrderServiceLogic: OrderServiceProvider, OrderPartiesLookup {
    public static let maxItems = 1000
    public static let maxItemLength = 512
    public static let maxLines = 100
    public static let quantities: ClosedRange<Int32> = 1...99
    public static let maxNoteLength = 200
    /// The order service's consumer group (its replicas share it).
    static let consumerGroup = "order_service"

    private let store: any OrderStore
    private let menus: any MenuCatalog
    private let events: any EventCatchUp
    private let consumerGroup: String
    /// The service's own consumer, when it runs one (started and stopped with the service).
    private let consumer: EventConsumer?
    private let hub: EventHub
    private let logger: Logger

    /// The service on Redis: its store, its consumer group and its watchers' hub; orders by
    /// menu lines are priced from `menus`.
    public init(redis: RedisClient, menus: any MenuCatalog, logger: Logger) {
        self.init(redis: redis, menus: menus, logger: logger, consumerGroup: Self.consumerGroup)
    }

    /// `consumerGroup`: another group than the service's own (a test's reader that consumes
    /// nothing but must not disturb the service).
    init(redis: RedisClient, menus: any MenuCatalog, logger: Logger, consumerGroup: String) {
        let store = RedisOrderStore(redis: redis)
        let consumer = EventConsumer(group: consumerGroup, redis: redis, logger: logger) { events, _ throws(RPCError) in
            do throws(StorageError) { try await store.applyDeliveryEvents(events) } catch { throw RPCError(storage: error) }
        }
        self.init(store: store, menus: menus, events: consumer, consumerGroup: consumerGroup, consumer: consumer,
                  hub: EventHub(redis: redis, logger: logger), logger: logger)
    }

    /// The service on any store; `events` catches up on the events the store's consumers apply.
    init(store: any OrderStore, menus: any MenuCatalog, events: any EventCatchUp, consumerGroup: String = Self.consumerGroup,
         consumer: EventConsumer? = nil, hub: EventHub, logger: Logger) {
        self.store = store
        self.menus = menus
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

    /// Brings the service's gauges up to date (before a scrape): its consumer's lag.
    public func recordMetrics() async {
        await consumer?.recordLag()
    }

    public func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        try Self.validate(request)
        let requestKey = request.requestId.isEmpty ? nil : RequestKey(customer: request.customerId, requestID: request.requestId)
        // The id first: it names the partition, and so the keys, the order is stored under.
        var id = "order_\(try await stored { () async throws(StorageError) in try await store.nextOrderNumber() })"
        if let requestKey {
            var unique = request
            unique.requestId = ""
            let fingerprint = String(fnv1a(unique.serializedBytes()), radix: 16)
            let claim = try await stored { () async throws(StorageError) in
                try await store.claimRequest(requestKey, fingerprint: fingerprint, orderID: id)
            }
            if case .earlier(let earlierID, let earlierFingerprint) = claim {
                guard earlierFingerprint == fingerprint else {
                    throw RPCError(.invalidArgument, "request_id \(request.requestId) was used for a different order within the last 24 hours")
                }
                // A retry: the order is the earlier request's. When that request stopped before
                // storing it, this one stores it, under the same id.
                id = earlierID
                if let placed = try await placedOrder(id) { return placed }
            }
        }
        var order = NewOrder(id: id, customer: request.customerId, restaurant: request.restaurantId, items: request.items,
                             totalPrice: request.totalPrice, address: request.deliveryAddress)
        if !request.lines.isEmpty {
            guard let menu = try await menus.menu(of: request.restaurantId, context: context) else {
                throw RPCError(.failedPrecondition, "restaurant \(request.restaurantId) has no menu")
            }
            let priced = try PricedOrder(request.lines, menu: menu)
            order.priced = priced
            order.items = priced.items
            order.totalPrice = priced.totalPrice
        }
        guard try await stored({ () async throws(StorageError) in try await store.place(order) }) else {
            // Only a retry racing another retry of the same request gets here legitimately.
            guard requestKey != nil, let placed = try await placedOrder(id) else {
                throw RPCError(.internal, "order number \(id) was handed out twice")
            }
            return placed
        }
        BusinessMetrics.ordersPlaced.increment()
        logger.info("order placed", metadata: ["order": "\(id)", "restaurant": "\(request.restaurantId)"])
        return PlaceOrderResponse(orderId: id, status: OrderStatus.placed.rawValue, totalCents: order.priced?.totalCents ?? 0,
                                  currency: order.priced?.currency ?? "")
    }

    /// What PlaceOrder answers for an order placed already (a retry): the order as it is now.
    private func placedOrder(_ id: String) async throws(RPCError) -> PlaceOrderResponse? {
        let read = try await stored { () async throws(StorageError) in
            try await store.read(id, consumerGroup: consumerGroup, applyingUnapplied: false)
        }
        guard case .found(let order) = read else { return nil }
        return PlaceOrderResponse(orderId: id, status: order.status, totalCents: order.totalCents, currency: order.currency)
    }

    /// PlaceOrder's input rules, all checked before anything is stored or read.
    static func validate(_ request: PlaceOrderRequest) throws(RPCError) {
        try Identifier.validate(request.customerId, field: "customer_id")
        if !request.restaurantId.isEmpty { try Identifier.validate(request.restaurantId, field: "restaurant_id") }
        if !request.requestId.isEmpty { try Identifier.validate(request.requestId, field: "request_id") }
        if request.deliveryAddress != Address() { try validate(request.deliveryAddress) }
        guard request.lines.isEmpty else {
            guard request.items.isEmpty, request.totalPrice == 0 else {
                throw RPCError(.invalidArgument, "give either lines, priced from the menu, or items with total_price, not both")
            }
            guard !request.restaurantId.isEmpty else { throw RPCError(.invalidArgument, "restaurant_id is required with lines") }
            guard request.lines.count <= maxLines else { throw RPCError(.invalidArgument, "an order has at most \(maxLines) lines") }
            for (index, line) in request.lines.enumerated() {
                try Identifier.validate(line.menuItemId, field: "lines[\(index)].menu_item_id")
                guard quantities.contains(line.quantity) else {
                    throw RPCError(.invalidArgument, "lines[\(index)].quantity must be \(quantities.lowerBound) to \(quantities.upperBound), got \(line.quantity)")
                }
                guard line.note.utf8.count <= maxNoteLength else {
                    throw RPCError(.invalidArgument, "lines[\(index)].note is longer than \(maxNoteLength) bytes")
                }
            }
            return
        }
        guard !request.items.isEmpty else { throw RPCError(.invalidArgument, "an order needs at least one item or line") }
        guard request.items.count <= maxItems else {
            throw RPCError(.invalidArgument, "an order has at most \(maxItems) items")
        }
        guard request.items.allSatisfy({ !$0.isEmpty && $0.utf8.count <= maxItemLength }) else {
            throw RPCError(.invalidArgument, "items must be 1 to \(maxItemLength) bytes each")
        }
        try validateAmount(request.totalPrice, field: "total_price")
    }

    /// A delivery address: street and city required; every part within its length.
    static func validate(_ address: Address) throws(RPCError) {
        for (field, value, required, limit) in [("street", address.street, true, 200), ("city", address.city, true, 200),
                                                ("postal_code", address.postalCode, false, 20), ("notes", address.notes, false, 500)] {
            guard !required || !value.isEmpty else { throw RPCError(.invalidArgument, "delivery_address.\(field) is required") }
            guard value.utf8.count <= limit else {
                throw RPCError(.invalidArgument, "delivery_address.\(field) is longer than \(limit) bytes")
            }
        }
    }

    public func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        let read = try await afterDeliveryChanges(of: id, behind: OrderRead.behind) { applying throws(StorageError) in
            try await store.read(id, consumerGroup: consumerGroup, applyingUnapplied: applying)
        }
        guard case .found(let order) = read else { throw RPCError(.notFound, "order \(id) not found") }
        return GetOrderStatusResponse(orderId: id, status: order.status, items: order.items, totalPrice: order.totalPrice,
                                      lines: order.lines, totalCents: order.totalCents, currency: order.currency,
                                      deliveryAddress: order.address, estimatedReadyAtUnixMs: order.estimatedReadyAtUnixMs,
                                      rejectReason: order.rejectionReason?.rawValue ?? "", rejectMessage: order.rejectionMessage,
                                      kitchenStatus: order.kitchen?.rawValue ?? "", deliveryStatus: order.delivery,
                                      canceledBy: order.canceledBy?.rawValue ?? "", cancelReason: order.cancelReason)
    }

    /// Runs a store operation that first applies the order's newest delivery event the consumer
    /// group has not applied yet (`applying`), so a change made a moment ago through the delivery
    /// service counts, in one round trip. Only when more are unapplied than the store looks
    /// through (it answers `behind`) does the consumer catch up on the order's partition first;
    /// after that the plain operation sees every earlier write.
    /// Inlined, so each caller gets it specialized to its outcome and closure: GetOrderStatus
    /// runs through it on every call (unspecialized, it cost the read path measurably).
    @inline(__always)
    private func afterDeliveryChanges<Outcome: Equatable & Sendable>(
        of id: String, behind: Outcome, _ operation: (_ applying: Bool) async throws(StorageError) -> Outcome
    ) async throws(RPCError) -> Outcome {
        let outcome = try await stored { () async throws(StorageError) in try await operation(true) }
        guard outcome == behind else { return outcome }
        try await events.catchUp(OrderPartition(order: id))
        return try await stored { () async throws(StorageError) in try await operation(false) }
    }

    public func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        guard request.reason.utf8.count <= Self.maxReasonLength else {
            throw RPCError(.invalidArgument, "reason is longer than \(Self.maxReasonLength) bytes")
        }
        let party = Self.cancelingParty(context.caller)
        let outcome = try await afterDeliveryChanges(of: id, behind: CancelOutcome.behind) { applying throws(StorageError) in
            try await store.cancel(id, by: party, reason: request.reason, consumerGroup: consumerGroup, applyingUnapplied: applying)
        }
        switch outcome {
        case .canceled:
            BusinessMetrics.ordersCanceled.increment()
            logger.info("order canceled", metadata: ["order": "\(id)", "by": "\(party.rawValue)"])
            return CancelOrderResponse(orderId: id, status: OrderStatus.canceled.rawValue)
        case .notCancelable: return CancelOrderResponse(orderId: id, status: Self.couldNotCancel)
        case .behind: throw RPCError(.unavailable, "the order service is catching up on events; try again")
        case .notFound: throw RPCError(.notFound, "order \(id) not found")
        }
    }

    /// What CancelOrder answers when the caller may not cancel the order now (the seed's word).
    static let couldNotCancel = "COULD_NOT_CANCEL"
    /// The longest cancel or rejection reason kept.
    public static let maxReasonLength = 500

    /// The party a caller cancels as: a restaurant or an operator by its role; a customer
    /// otherwise, also without authentication (the seed's clients are customers).
    static func cancelingParty(_ caller: Caller?) -> CancelingParty {
        switch caller?.role {
        case .restaurant: .restaurant
        case .operator: .operator
        default: .customer
        }
    }

    public static let defaultPageSize = 50
    public static let maxPageSize = 200

    public func listOrders(_ request: ListOrdersRequest, context: ServerContext) async throws -> ListOrdersResponse {
        let owner: OrderOwner
        switch (request.customerId.isEmpty, request.restaurantId.isEmpty) {
        case (false, true):
            try Identifier.validate(request.customerId, field: "customer_id")
            owner = .customer(request.customerId)
        case (true, false):
            try Identifier.validate(request.restaurantId, field: "restaurant_id")
            owner = .restaurant(request.restaurantId)
        default:
            throw RPCError(.invalidArgument, "give exactly one of customer_id and restaurant_id")
        }
        var statuses = Set<String>()
        for status in request.statuses {
            guard OrderStatus(rawValue: status) != nil else {
                throw RPCError(.invalidArgument, "statuses: \(status) is not an order status (\(OrderStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            statuses.insert(status)
        }
        guard request.pageSize >= 0 else { throw RPCError(.invalidArgument, "page_size must be 0 or more, got \(request.pageSize)") }
        let size = request.pageSize == 0 ? Self.defaultPageSize : min(Int(request.pageSize), Self.maxPageSize)
        let query = "\(owner) \(statuses.sorted())"
        let before = try PageToken.position(request.pageToken, query: query)

        // Each partition's index at once, the newest `scan` below the token of each.
        let scan = statuses.isEmpty ? size : min(size * 4, 1000)
        let store = self.store
        let lists = try await stored { () async throws(StorageError) in
            try await Self.eachPartition(OrderPartition.all) { partition throws(StorageError) in
                try await store.listed(owner, in: partition, before: before, limit: scan)
            }
        }
        // A partition that filled its scan may have more below its last entry: only what is at or
        // above the highest such entry is known whole, and the page is taken from that.
        let bound = lists.values.filter { $0.count == scan }.compactMap { $0.last?.number }.max()
        var known: [(partition: OrderPartition, id: String, number: Int64)] = []
        for (partition, list) in lists {
            for entry in list where entry.number >= (bound ?? .min) { known.append((partition, entry.id, entry.number)) }
        }
        known.sort { $0.number > $1.number }
        var grouped: [OrderPartition: [String]] = [:]
        for entry in known { grouped[entry.partition, default: []].append(entry.id) }
        let byPartition = grouped
        let found = try await stored { () async throws(StorageError) in
            try await Self.eachPartition(Array(byPartition.keys)) { partition throws(StorageError) in
                let ids = byPartition[partition] ?? []
                return Dictionary(zip(ids, try await store.summaries(ids, in: partition))) { first, _ in first }
            }
        }
        var page: [OrderSummary] = []
        var last: Int64?
        var consumed = 0
        for candidate in known where page.count < size {
            consumed += 1
            guard let summary = found[candidate.partition]?[candidate.id] ?? nil,
                  statuses.isEmpty || statuses.contains(summary.status) else { continue }
            page.append(summary)
            last = candidate.number
        }
        let next: Int64? = if page.count == size, consumed < known.count || bound != nil { last } else { bound }
        return ListOrdersResponse(orders: page, nextPageToken: next.map { PageToken.make(after: $0, query: query) } ?? "")
    }

    /// `body` for each of `partitions` at once: their reads go to their nodes side by side.
    private static func eachPartition<T: Sendable>(
        _ partitions: [OrderPartition], _ body: @escaping @Sendable (OrderPartition) async throws(StorageError) -> T
    ) async throws(StorageError) -> [OrderPartition: T] {
        do {
            return try await withThrowingTaskGroup(of: (OrderPartition, T).self) { group in
                for partition in partitions { group.addTask { (partition, try await body(partition)) } }
                var results: [OrderPartition: T] = [:]
                for try await (partition, result) in group { results[partition] = result }
                return results
            }
        } catch let error as StorageError {
            throw error
        } catch {
            throw StorageError(.failed, "\(error)")
        }
    }

    public func recordOrderReady(_ request: RecordOrderReadyRequest, context: ServerContext) async throws -> RecordOrderReadyResponse {
        let id = request.orderId, restaurant = request.restaurantId
        try Identifier.validate(id, field: "order_id")
        try Identifier.validate(restaurant, field: "restaurant_id")
        let outcome = try await afterDeliveryChanges(of: id, behind: ReadyOutcome.behind) { applying throws(StorageError) in
            try await store.markReady(id, restaurant: restaurant, consumerGroup: consumerGroup, applyingUnapplied: applying)
        }
        switch outcome {
        case .ready(let status):
            return RecordOrderReadyResponse(orderId: id, status: status.rawValue, kitchenStatus: KitchenStatus.ready.rawValue)
        case .notFound: throw RPCError(.notFound, "order \(id) not found")
        case .behind: throw RPCError(.unavailable, "the order service is catching up on events; try again")
        case .otherRestaurant(let other): throw RPCError(.permissionDenied, "order \(id) was placed with restaurant \(other)")
        case .notPreparing(let status): throw RPCError(.failedPrecondition, "order \(id) is \(status): the kitchen does not have it")
        }
    }

    public func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        let id = request.orderId, restaurant = request.restaurantId
        try Identifier.validate(id, field: "order_id")
        try Identifier.validate(restaurant, field: "restaurant_id")
        let decision = try Self.decision(of: request)
        switch try await stored({ () async throws(StorageError) in try await store.decide(id, restaurant: restaurant, decision: decision) }) {
        case .decided(let status, let readyAt, let repeated):
            if !repeated {
                (status == .accepted ? BusinessMetrics.ordersAccepted : BusinessMetrics.ordersRejected).increment()
                logger.info("order decided", metadata: ["order": "\(id)", "decision": "\(status.rawValue)", "restaurant": "\(restaurant)"])
            }
            return RecordRestaurantDecisionResponse(orderId: id, status: status.rawValue, estimatedReadyAtUnixMs: readyAt ?? 0)
        case .notFound:
            throw RPCError(.notFound, "order \(id) not found")
        case .otherRestaurant(let other):
            throw RPCError(.permissionDenied, "order \(id) was placed with restaurant \(other)")
        case .notPlaced(let status):
            throw RPCError(.failedPrecondition, "order \(id) is \(status), not PLACED")
        }
    }

    /// The decision a request records, its details checked.
    static func decision(of request: RecordRestaurantDecisionRequest) throws(RPCError) -> Decision {
        switch OrderStatus(rawValue: request.decision) {
        case .accepted:
            guard request.rejectReason.isEmpty, request.rejectMessage.isEmpty else {
                throw RPCError(.invalidArgument, "reject_reason and reject_message go with REJECTED only")
            }
            guard (0...maxPrepMinutes).contains(request.prepMinutes) else {
                throw RPCError(.invalidArgument, "prep_minutes must be 1 to \(maxPrepMinutes) (or 0 for none), got \(request.prepMinutes)")
            }
            return .accept(prepMinutes: request.prepMinutes == 0 ? nil : request.prepMinutes)
        case .rejected:
            guard request.prepMinutes == 0 else { throw RPCError(.invalidArgument, "prep_minutes goes with ACCEPTED only") }
            let reason = request.rejectReason.isEmpty ? RejectionReason.other : RejectionReason(rawValue: request.rejectReason)
            guard let reason else {
                let names = RejectionReason.allCases.map(\.rawValue).joined(separator: ", ")
                throw RPCError(.invalidArgument, "reject_reason must be one of \(names), got \(request.rejectReason)")
            }
            guard request.rejectMessage.utf8.count <= maxReasonLength else {
                throw RPCError(.invalidArgument, "reject_message is longer than \(maxReasonLength) bytes")
            }
            return .reject(reason, message: request.rejectMessage)
        default:
            throw RPCError(.invalidArgument, "decision must be ACCEPTED or REJECTED")
        }
    }

    public func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        let id = request.orderId
        try Identifier.validate(id, field: "order_id")
        // Follow before reading: whatever happens after the snapshot then reaches the watch.
        let watch = OrderWatch()
        let registration = try await hub.follow(.order(id), with: watch)
        try await events.catchUp(OrderPartition(order: id))
        guard let snapshot = try await stored({ () async throws(StorageError) in try await store.snapshot(id) }) else {
            throw RPCError(.notFound, "order \(id) not found")
        }
        let update = OrderUpdate(
            orderId: id, status: snapshot.status.rawValue, driverId: snapshot.driver,
            updatedAtUnixMs: Int64(snapshot.lastEvent.milliseconds), restaurantId: snapshot.restaurant,
            customerId: snapshot.customer, final: snapshot.status.isFinal, estimatedReadyAtUnixMs: snapshot.estimatedReadyAtUnixMs,
            rejectReason: snapshot.rejectionReason?.rawValue ?? "", kitchenStatus: snapshot.kitchen?.rawValue ?? "",
            deliveryStatus: snapshot.delivery, cancelReason: snapshot.cancelReason)
        try await responses.write(update)
        // A final order ends the call here (the registration goes with this frame); any other is
        // the watch's from now on, with no task waiting for its next change.
        guard !snapshot.status.isFinal else { return }
        watch.start(progress: snapshot.progress, update: update, snapshotEvent: snapshot.lastEvent,
                    responses: responses.handOver(), registration: registration)
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
