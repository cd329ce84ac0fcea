// What the order service keeps, in its own terms, and the Redis store that keeps it.
//
// OrderServiceLogic is written against `OrderStore`: each operation answers a domain outcome
// (placed, not found, not cancelable, decided by another restaurant, ...) or throws a
// `StorageError`, and the service alone turns those into gRPC statuses. So the service's rules
// (validation, which outcome is which status, reading its own writes) are tested without a
// server against a store in memory (ServicesTests' InMemoryOrderStore), and against Redis by the
// service tests. `RedisOrderStore` keeps orders as described in OrderServiceLogic: each operation
// is one function of the service's Lua library (Lua/*.lua), on the keys of OrderKeys.
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient
import TraceContext

/// The order service's storage.
public protocol OrderStore: Sendable {
    /// A number no order has had (`order_<n>`), also across replicas and failovers.
    func nextOrderNumber() async throws(StorageError) -> Int64
    /// Ties a customer's request id to `orderID` for a day (PlaceOrder's idempotency key), unless
    /// an earlier request tied it already: then that one's order and fingerprint.
    func claimRequest(_ request: RequestKey, fingerprint: String, orderID: String) async throws(StorageError) -> RequestClaim
    /// Stores a new PLACED order and its ORDER_PLACED event; false when the id is taken.
    func place(_ order: NewOrder) async throws(StorageError) -> Bool
    /// The order as GetOrderStatus shows it. With `applyingUnapplied`, the order's newest
    /// delivery event that the service's consumers have not applied yet is applied first;
    /// `.behind` says too many are unapplied to look through, and nothing was read.
    func read(_ id: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> OrderRead
    /// Cancels the order if `party` may now (CancelingParty's rules), first applying the order's
    /// newest delivery event that the service's consumers have not applied yet (unless
    /// `applyingUnapplied` is false).
    func cancel(_ id: String, by party: CancelingParty, reason: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> CancelOutcome
    /// Marks an accepted order's food ready, as ORDER_READY; also applies the unapplied delivery
    /// event first.
    func markReady(_ id: String, restaurant: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> ReadyOutcome
    /// Records the restaurant's decision (ACCEPTED or REJECTED) on a PLACED order, with its event.
    func decide(_ id: String, restaurant: String, decision: Decision) async throws(StorageError) -> DecisionOutcome
    /// What WatchOrder starts from; nil for an unknown order.
    func snapshot(_ id: String) async throws(StorageError) -> OrderSnapshot?
    /// Who takes part in the order; nil for an unknown order.
    func parties(_ id: String) async throws(StorageError) -> OrderParties?
    /// The newest orders of `owner` in one partition's index, numbered below `before` (from the
    /// newest when nil): at most `limit`, newest first, with their numbers.
    func listed(_ owner: OrderOwner, in partition: OrderPartition, before: Int64?, limit: Int) async throws(StorageError) -> [(id: String, number: Int64)]
    /// The orders as lists show them (nil for an id with no order), all of one partition.
    func summaries(_ ids: [String], in partition: OrderPartition) async throws(StorageError) -> [OrderSummary?]
    /// Shows delivery events (DRIVER_ASSIGNED, DELIVERY_STATUS; others are ignored) on their
    /// orders, skipping any older than the order's last event. The events are of one partition.
    func applyDeliveryEvents(_ events: [PlatformEvent]) async throws(StorageError)
}

/// An order as PlaceOrder stores it.
public struct NewOrder: Sendable, Equatable {
    public var id: String
    public var customer: String
    public var restaurant: String
    public var items: [String]
    public var totalPrice: Double
    /// For an order placed by menu lines: the lines as priced (`items` and `totalPrice` are
    /// derived from them).
    public var priced: PricedOrder?
    /// Empty when none was given.
    public var address = Address()
}

/// What GetOrderStatus reads.
public struct OrderView: Sendable, Equatable {
    public var status: String
    public var items: [String]
    public var totalPrice: Double
    /// Empty for an order of free-text items.
    public var lines: [PricedLine] = []
    public var totalCents: Int64 = 0
    public var currency = ""
    public var address = Address()
    /// Accepted with the kitchen's minutes: when the food should be ready; else 0.
    public var estimatedReadyAtUnixMs: Int64 = 0
    /// REJECTED: why, and the restaurant's words.
    public var rejectionReason: RejectionReason?
    public var rejectionMessage = ""
    public var kitchen: KitchenStatus?
    /// The delivery's stage (DeliveryStatus raw values); empty before a driver.
    public var delivery = ""
    public var canceledBy: CancelingParty?
    public var cancelReason = ""
}

/// Whose orders a list shows.
public enum OrderOwner: Sendable, Hashable {
    case customer(String)
    case restaurant(String)
}

/// A customer's idempotency key for PlaceOrder.
public struct RequestKey: Sendable, Hashable {
    public var customer: String
    public var requestID: String
}

public enum RequestClaim: Sendable, Equatable {
    /// The request id is now this order's.
    case claimed
    /// A request with this fingerprint took the id for this order before.
    case earlier(orderID: String, fingerprint: String)
}

public enum OrderRead: Sendable, Equatable {
    case found(OrderView)
    case notFound
    /// More unapplied events than a read looks through: catch up, then read without applying.
    case behind
}

public enum CancelOutcome: Sendable, Equatable {
    case canceled
    /// Not by this party, not now.
    case notCancelable
    case notFound
    /// More unapplied events than the store looks through: catch up, then cancel without applying.
    case behind
}

public enum ReadyOutcome: Sendable, Equatable {
    /// Marked now or before; the order's status.
    case ready(OrderStatus)
    case notFound
    case otherRestaurant(String)
    /// The kitchen does not have the order (not accepted, picked up, canceled); its status.
    case notPreparing(String)
    case behind
}

/// A restaurant's decision on an order.
public enum Decision: Sendable, Equatable {
    /// With the kitchen's minutes (nil: not given).
    case accept(prepMinutes: Int32?)
    case reject(RejectionReason, message: String)

    /// The status it gives the order.
    public var status: OrderStatus {
        if case .accept = self { return .accepted }
        return .rejected
    }
}

public enum DecisionOutcome: Sendable, Equatable {
    /// Decided now, or (`repeated`) the same decision of the same restaurant before; with the
    /// estimated ready time when the acceptance gave minutes.
    case decided(OrderStatus, readyAtUnixMs: Int64?, repeated: Bool)
    case notFound
    /// The order was placed with this other restaurant.
    case otherRestaurant(String)
    /// The order is in this status, past PLACED, by another decision.
    case notPlaced(String)
}

/// An order's state as a watch starts from, and the id of the last event it reflects.
public struct OrderSnapshot: Sendable, Equatable {
    public var status: OrderStatus
    public var driver: String
    public var restaurant: String
    public var customer: String
    public var lastEvent: StreamID
    public var estimatedReadyAtUnixMs: Int64 = 0
    public var rejectionReason: RejectionReason?
    public var kitchen: KitchenStatus?
    public var delivery = ""
    public var cancelReason = ""

    /// What a watcher's updates move on from.
    public var progress: OrderProgress { OrderProgress(status: status, kitchen: kitchen, delivery: delivery.isEmpty ? nil : delivery) }
}

/// Orders in Redis.
public struct RedisOrderStore: OrderStore {
    private let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    public func nextOrderNumber() async throws(StorageError) -> Int64 {
        // With WAIT, so that a failover cannot hand the same number out again.
        let reply: RedisReply
        do { reply = try await redis.send(["INCR", OrderKeys.sequence], waitForReplicas: true) } catch { throw StorageError(error) }
        guard let number = reply.int else { throw StorageError(.failed, "INCR \(OrderKeys.sequence) answered \(reply)") }
        return number
    }

    public func claimRequest(_ request: RequestKey, fingerprint: String, orderID: String) async throws(StorageError) -> RequestClaim {
        let reply = try await redis.run(Scripts.claimRequest, keys: [OrderKeys.request(request)],
                                        arguments: [fingerprint, orderID, "\(OrderKeys.requestLifetimeSeconds)"], change: true)
        guard let text = reply.string else { throw StorageError(.failed, "claim_request answered \(reply)") }
        if text == "CLAIMED" { return .claimed }
        let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { throw StorageError(.failed, "claim_request answered \(reply)") }
        return .earlier(orderID: parts[1], fingerprint: parts[0])
    }

    public func place(_ order: NewOrder) async throws(StorageError) -> Bool {
        let keys = OrderKeys(order.id)
        let address = order.address
        let lines = (order.priced?.lines ?? []).flatMap { line in
            [line.menuItemId, line.name, "\(line.quantity)", line.note, "\(line.unitPriceCents)"]
        }
        let arguments = [order.id, order.customer, "\(order.totalPrice)", order.restaurant,
                         order.priced.map { "\($0.totalCents)" } ?? "", order.priced?.currency ?? "",
                         address.street, address.city, address.postalCode, address.notes, "\(OrderKeys.number(of: order.id))",
                         "\(order.items.count)"]
            + order.items + lines
        var indexes = [OrderKeys.index(.customer(order.customer), in: keys.partition)]
        if !order.restaurant.isEmpty { indexes.append(OrderKeys.index(.restaurant(order.restaurant), in: keys.partition)) }
        let reply = try await redis.run(Scripts.place, keys: [keys.order, keys.items, keys.partition.stream, keys.lines] + indexes,
                                        arguments: arguments, change: true)
        switch reply.string {
        case OrderStatus.placed.rawValue: return true
        case "EXISTS": return false
        default: throw StorageError(.failed, "place answered \(reply)")
        }
    }

    public func read(_ id: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> OrderRead {
        let keys = OrderKeys(id)
        // Through the cache: GetOrderStatus is what customers poll. Only an order's view is kept
        // (not BEHIND, not an unknown id).
        let reply = try await redis.read(Scripts.get, keys: [keys.partition.stream, keys.order, keys.items, keys.lines],
                                         arguments: [id, consumerGroup, applyingUnapplied ? Scripts.applyUnapplied : ""],
                                         cachingReplyIf: { $0.array != nil })
        if reply.string == Scripts.behind { return .behind }
        guard let fields = reply.array, fields.count == 5, let status = fields[0].string else { return .notFound }
        var view = OrderView(status: status, items: (fields[2].array ?? []).compactMap(\.string), totalPrice: fields[1].string.flatMap(Double.init) ?? 0)
        let present = fields[3].array ?? []
        guard !present.isEmpty else { return .found(view) }
        var optional: [String: String] = [:]
        for index in stride(from: 0, to: present.count - 1, by: 2) {
            if let name = present[index].string { optional[name] = present[index + 1].string }
        }
        let flatLines = (fields[4].array ?? []).map { $0.string ?? "" }
        view.lines = stride(from: 0, to: flatLines.count - 4, by: 5).map { index in
            let quantity = Int32(flatLines[index + 2]) ?? 0, unit = Int64(flatLines[index + 4]) ?? 0
            return PricedLine(menuItemId: flatLines[index], name: flatLines[index + 1], quantity: quantity, note: flatLines[index + 3],
                              unitPriceCents: unit, lineTotalCents: unit * Int64(quantity))
        }
        view.totalCents = optional["total_cents"].flatMap { Int64($0) } ?? 0
        view.currency = optional["currency"] ?? ""
        view.address = Address(street: optional["address_street"] ?? "", city: optional["address_city"] ?? "",
                               postalCode: optional["address_postal_code"] ?? "", notes: optional["address_notes"] ?? "")
        view.estimatedReadyAtUnixMs = optional["estimated_ready_at"].flatMap { Int64($0) } ?? 0
        view.rejectionReason = optional["reject_reason"].flatMap(RejectionReason.init(rawValue:))
        view.rejectionMessage = optional["reject_message"] ?? ""
        view.kitchen = optional["kitchen_status"].flatMap(KitchenStatus.init(rawValue:))
        view.delivery = optional["delivery_status"] ?? ""
        view.canceledBy = optional["canceled_by"].flatMap(CancelingParty.init(rawValue:))
        view.cancelReason = optional["cancel_reason"] ?? ""
        return .found(view)
    }

    public func cancel(_ id: String, by party: CancelingParty, reason: String, consumerGroup: String,
                       applyingUnapplied: Bool) async throws(StorageError) -> CancelOutcome {
        let keys = OrderKeys(id)
        let reply = try await redis.run(Scripts.cancel, keys: [keys.order, keys.partition.stream],
                                        arguments: [id, party.rawValue, reason, applyingUnapplied ? consumerGroup : ""], change: true)
        switch reply.string {
        case OrderStatus.canceled.rawValue: return .canceled
        case "NOT_CANCELABLE": return .notCancelable
        case "NOT_FOUND": return .notFound
        case Scripts.behind: return .behind
        default: throw StorageError(.failed, "cancel answered \(reply)")
        }
    }

    public func markReady(_ id: String, restaurant: String, consumerGroup: String,
                          applyingUnapplied: Bool) async throws(StorageError) -> ReadyOutcome {
        let keys = OrderKeys(id)
        let reply = try await redis.run(Scripts.ready, keys: [keys.order, keys.partition.stream],
                                        arguments: [id, restaurant, applyingUnapplied ? consumerGroup : ""], change: true)
        if reply.string == Scripts.behind { return .behind }
        let parts = (reply.array ?? []).map { $0.string ?? "" }
        switch (parts.first, parts.count) {
        case ("READY", 2): if let status = OrderStatus(rawValue: parts[1]) { return .ready(status) }
        case ("NOT_FOUND", 1): return .notFound
        case ("OTHER_RESTAURANT", 2): return .otherRestaurant(parts[1])
        case ("NOT_PREPARING", 2): return .notPreparing(parts[1])
        default: break
        }
        throw StorageError(.failed, "ready answered \(reply)")
    }

    public func decide(_ id: String, restaurant: String, decision: Decision) async throws(StorageError) -> DecisionOutcome {
        let keys = OrderKeys(id)
        var details = ["0", "", ""]
        switch decision {
        case .accept(let minutes): details[0] = "\(minutes ?? 0)"
        case .reject(let reason, let message): details[1...] = [reason.rawValue, message]
        }
        // The event carries the trace of the call deciding (the task's; see Telemetry's tracing).
        let trace = TraceContext.active?.traceparent ?? ""
        let reply = try await redis.run(Scripts.decide, keys: [keys.order, keys.partition.stream],
                                        arguments: [id, restaurant, decision.status.rawValue] + details + [trace], change: true)
        let parts = (reply.array ?? []).map { $0.string ?? "" }
        switch (parts.first, parts.count) {
        case ("DECIDED", 3), ("DECIDED", 4):
            if let status = OrderStatus(rawValue: parts[1]) {
                return .decided(status, readyAtUnixMs: Int64(parts[2]), repeated: parts.count == 4)
            }
        case ("NOT_FOUND", 1): return .notFound
        case ("OTHER_RESTAURANT", 2): return .otherRestaurant(parts[1])
        case ("NOT_PLACED", 2): return .notPlaced(parts[1])
        default: break
        }
        throw StorageError(.failed, "decide answered \(reply)")
    }

    public func snapshot(_ id: String) async throws(StorageError) -> OrderSnapshot? {
        let reply = try await redis.run(Scripts.watchSnapshot, keys: [OrderKeys(id).order], change: false)
        guard let fields = reply.array, fields.count == 10, let status = fields[0].string.flatMap(OrderStatus.init(rawValue:)) else {
            return nil
        }
        return OrderSnapshot(status: status, driver: fields[1].string ?? "", restaurant: fields[2].string ?? "",
                             customer: fields[3].string ?? "", lastEvent: fields[4].string.flatMap(StreamID.init) ?? .zero,
                             estimatedReadyAtUnixMs: fields[5].string.flatMap { Int64($0) } ?? 0,
                             rejectionReason: fields[6].string.flatMap(RejectionReason.init(rawValue:)),
                             kitchen: fields[7].string.flatMap(KitchenStatus.init(rawValue:)), delivery: fields[8].string ?? "",
                             cancelReason: fields[9].string ?? "")
    }

    public func parties(_ id: String) async throws(StorageError) -> OrderParties? {
        let reply: RedisReply
        do {
            reply = try await redis.send(["HMGET", OrderKeys(id).order, "customer_id", "restaurant_id", "driver_id"])
        } catch { throw StorageError(error) }
        let fields = reply.array ?? []
        guard fields.count == 3, let customer = fields[0].string else { return nil }
        return OrderParties(customer: customer, restaurant: fields[1].string, driver: fields[2].string)
    }

    public func listed(_ owner: OrderOwner, in partition: OrderPartition, before: Int64?,
                       limit: Int) async throws(StorageError) -> [(id: String, number: Int64)] {
        let reply: RedisReply
        do {
            reply = try await redis.send(["ZRANGE", OrderKeys.index(owner, in: partition), before.map { "(\($0)" } ?? "+inf", "-inf",
                                          "BYSCORE", "REV", "LIMIT", "0", "\(limit)", "WITHSCORES"])
        } catch { throw StorageError(error) }
        let flat = (reply.array ?? []).map { $0.string ?? "" }
        return stride(from: 0, to: flat.count - 1, by: 2).compactMap { index in
            Int64(flat[index + 1]).map { (flat[index], $0) }
        }
    }

    public func summaries(_ ids: [String], in partition: OrderPartition) async throws(StorageError) -> [OrderSummary?] {
        guard !ids.isEmpty else { return [] }
        let reply = try await redis.run(Scripts.summaries, keys: ids.flatMap { id in [OrderKeys(id).order, OrderKeys(id).items] },
                                        change: false)
        let fields = reply.array ?? []
        guard fields.count == 9 * ids.count else { throw StorageError(.failed, "summaries answered \(fields.count) fields for \(ids.count) orders") }
        return ids.enumerated().map { index, id in
            let text = fields[9 * index..<9 * index + 8].map { $0.string ?? "" }
            guard !text[0].isEmpty else { return nil }
            return OrderSummary(orderId: id, status: text[0], customerId: text[1], restaurantId: text[2],
                                items: (fields[9 * index + 8].array ?? []).compactMap(\.string), totalPrice: Double(text[3]) ?? 0,
                                totalCents: Int64(text[4]) ?? 0, currency: text[5], kitchenStatus: text[6], deliveryStatus: text[7])
        }
    }

    public func applyDeliveryEvents(_ events: [PlatformEvent]) async throws(StorageError) {
        var keys: [String] = []
        var arguments: [String] = []
        for event in events {
            guard let id = event.id else { continue }
            switch event.kind {
            case .driverAssigned, .deliveryStatus:
                let stage = event.kind == .driverAssigned ? DeliveryStatus.assigned.rawValue : event.detail ?? ""
                keys.append(OrderKeys(event.orderID).order)
                arguments += [id.description, stage, event.driverID ?? ""]
            case .orderPlaced, .orderAccepted, .orderRejected, .orderCanceled, .orderReady:
                continue  // the order service's own events: the state changed with them
            }
        }
        if !keys.isEmpty { _ = try await redis.run(Scripts.applyDeliveryEvents, keys: keys, arguments: arguments, change: true) }
    }
}

/// Where an order lives in Redis: the order service's keys, all with the order's partition tag.
struct OrderKeys {
    /// Counter behind `order_<n>`; untagged (its own slot), and outside the order keys' names, so
    /// no order id can name it.
    static let sequence = "orders:seq"

    let partition: OrderPartition
    /// Hash: customer_id, total_price, restaurant_id, status, decision, decided_by, driver_id,
    /// last_event (the id of the last event applied to it: older ones are skipped); for an order
    /// placed by lines total_cents and currency; with an address address_street, address_city,
    /// address_postal_code, address_notes; estimated_ready_at when accepted with the kitchen's
    /// minutes, reject_reason and reject_message when rejected; kitchen_status once accepted;
    /// delivery_status and delivery_event (the last delivery event applied) once in delivery;
    /// canceled_by and cancel_reason when canceled.
    let order: String
    /// List of the order's items.
    let items: String
    /// List of the order's priced lines, five entries each: menu item id, name, quantity, note,
    /// unit price in minor units.
    let lines: String

    init(_ id: String) {
        partition = OrderPartition(order: id)
        order = "order:\(partition.tag):\(id)"
        items = order + ":items"
        lines = order + ":lines"
    }

    /// The order hash's fields that only some orders have (GetOrderStatus reads them when present).
    static let optionalFields = ["total_cents", "currency", "address_street", "address_city", "address_postal_code", "address_notes",
                                 "estimated_ready_at", "reject_reason", "reject_message", "kitchen_status", "delivery_status",
                                 "canceled_by", "cancel_reason"]

    /// The number in an order's id (`order_<n>`): what lists order by.
    static func number(of id: String) -> Int64 { Int64(id.dropFirst("order_".count)) ?? 0 }

    /// Sorted set: the ids of `owner`'s orders in `partition`, by number. Kept in the partition's
    /// slot, so the order and its index entries are written together; a list reads all
    /// partitions' indexes and merges them.
    static func index(_ owner: OrderOwner, in partition: OrderPartition) -> String {
        switch owner {
        case .customer(let id): "order-index:\(partition.tag):customer:\(id)"
        case .restaurant(let id): "order-index:\(partition.tag):restaurant:\(id)"
        }
    }

    /// How long a PlaceOrder request id names its order.
    static let requestLifetimeSeconds = 24 * 60 * 60

    /// String "<fingerprint> <order id>": the order a customer's request id placed. Tagged with
    /// a partition of its own (by customer and request id: the order's id is not known yet when
    /// it is looked up); ids cannot hold '/', so the name is unambiguous.
    static func request(_ key: RequestKey) -> String {
        let name = "\(key.customer)/\(key.requestID)"
        return "order-request:\(OrderPartition(order: name).tag):\(name)"
    }
}

/// The functions the store runs: the service's Lua/*.lua as one library.
enum Scripts {
    static let library = LuaLibrary(
        module: "order", helpers: [EventLua.unapplied, OrderLua.applyStage,
                                   "local optionalOrderField = {" + OrderKeys.optionalFields.map { "\($0) = true" }.joined(separator: ", ") + "}"],
        functions: ["place": OrderLua.place, "get": OrderLua.get, "claim_request": OrderLua.claimRequest, "ready": OrderLua.ready, "summaries": OrderLua.summaries, "watch_snapshot": OrderLua.watchSnapshot,
                    "cancel": OrderLua.cancel, "decide": OrderLua.decide, "apply_delivery_events": OrderLua.applyDeliveryEvents],
        readOnly: ["watch_snapshot", "summaries"])
    static let place = library.function("place")
    static let claimRequest = library.function("claim_request")
    static let get = library.function("get")
    static let watchSnapshot = library.function("watch_snapshot")
    static let cancel = library.function("cancel")
    static let ready = library.function("ready")
    static let summaries = library.function("summaries")
    static let decide = library.function("decide")
    static let applyDeliveryEvents = library.function("apply_delivery_events")

    /// What `get` answers when more events are unapplied than it looks at in one go.
    static let behind = PlatformEvents.behind
    /// `get`'s ARGV[3] when it is to apply the order's unapplied delivery event first.
    static let applyUnapplied = "apply"
}
