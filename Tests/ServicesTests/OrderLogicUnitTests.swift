// The order service's own rules, without a server: OrderServiceLogic on a store in memory.
//
// What is checked here is the service's part: validation before any storage, which store outcome
// becomes which gRPC status (the seed's answers included: COULD_NOT_CANCEL, PERMISSION_DENIED for
// another restaurant's order), a storage failure as UNAVAILABLE or INTERNAL, and reading its own
// writes (a `.behind` read has the consumer catch up on the order's partition, then reads without
// applying). The store keeps the rules of the Lua functions in Swift; the service tests run the
// same RPCs against Redis.
@testable import OrderLogic
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RPCCore
import Synchronization
import Testing

/// An OrderStore in memory, with the rules of the service's Lua.
final class InMemoryOrderStore: OrderStore {
    struct Order {
        var order: NewOrder
        var status: OrderStatus
        var decision: Decision?
        var decidedBy: String?
        var readyAt: Int64?
        var kitchen: KitchenStatus?
        var canceledBy: CancelingParty?
        var driver = ""
    }

    struct State {
        var orders: [String: Order] = [:]
        var requests: [RequestKey: (orderID: String, fingerprint: String)] = [:]
        var numbers: Int64 = 0
        /// How many reads still answer `.behind`.
        var behindReads = 0
        /// Each read's `applyingUnapplied`.
        var reads: [Bool] = []
        /// Thrown by every operation while set.
        var failure: StorageError?
        /// Handed out again by `nextOrderNumber` (a broken sequence).
        var repeatNumbers = false
    }

    let state = Mutex(State())

    private func checked<T>(_ body: (inout State) -> T) throws(StorageError) -> T {
        let result = state.withLock { state -> Result<T, StorageError> in
            if let failure = state.failure { return .failure(failure) }
            return .success(body(&state))
        }
        return try result.get()
    }

    func nextOrderNumber() async throws(StorageError) -> Int64 {
        try checked { state in
            if !state.repeatNumbers { state.numbers += 1 }
            return max(state.numbers, 1)
        }
    }

    func claimRequest(_ request: RequestKey, fingerprint: String, orderID: String) async throws(StorageError) -> RequestClaim {
        try checked { state in
            if let earlier = state.requests[request] { return .earlier(orderID: earlier.orderID, fingerprint: earlier.fingerprint) }
            state.requests[request] = (orderID, fingerprint)
            return .claimed
        }
    }

    func place(_ order: NewOrder) async throws(StorageError) -> Bool {
        try checked { state in
            guard state.orders[order.id] == nil else { return false }
            state.orders[order.id] = Order(order: order, status: .placed)
            return true
        }
    }

    func read(_ id: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> OrderRead {
        try checked { state in
            state.reads.append(applyingUnapplied)
            if applyingUnapplied, state.behindReads > 0 {
                state.behindReads -= 1
                return .behind
            }
            guard let order = state.orders[id] else { return .notFound }
            return .found(OrderView(status: order.status.rawValue, items: order.order.items, totalPrice: order.order.totalPrice,
                                    lines: order.order.priced?.lines ?? [], totalCents: order.order.priced?.totalCents ?? 0,
                                    currency: order.order.priced?.currency ?? "", address: order.order.address))
        }
    }

    func cancel(_ id: String, by party: CancelingParty, reason: String, consumerGroup: String,
                applyingUnapplied: Bool) async throws(StorageError) -> CancelOutcome {
        try checked { state in
            guard let order = state.orders[id] else { return .notFound }
            let beforePickup = order.status == .accepted || order.status == .assigned
            let allowed = switch party {
            case .customer: order.status == .placed || (beforePickup && order.kitchen != .ready)
            case .restaurant: beforePickup
            case .operator: !order.status.isFinal
            }
            guard allowed else { return .notCancelable }
            state.orders[id]?.status = .canceled
            state.orders[id]?.canceledBy = party
            return .canceled
        }
    }

    func listed(_ owner: OrderOwner, in partition: OrderPartition, before: Int64?,
                limit: Int) async throws(StorageError) -> [(id: String, number: Int64)] {
        try checked { state in
            let entries = state.orders.values.filter { order in
                guard OrderPartition(order: order.order.id) == partition else { return false }
                switch owner {
                case .customer(let id): return order.order.customer == id
                case .restaurant(let id): return order.order.restaurant == id
                }
            }.map { (id: $0.order.id, number: OrderKeys.number(of: $0.order.id)) }
            return Array(entries.filter { $0.number < (before ?? .max) }.sorted { $0.number > $1.number }.prefix(limit))
        }
    }

    func summaries(_ ids: [String], in partition: OrderPartition) async throws(StorageError) -> [OrderSummary?] {
        try checked { state in
            ids.map { id in
                state.orders[id].map { order in
                    OrderSummary(orderId: id, status: order.status.rawValue, customerId: order.order.customer, restaurantId: order.order.restaurant,
                                 items: order.order.items, totalPrice: order.order.totalPrice, kitchenStatus: order.kitchen?.rawValue ?? "")
                }
            }
        }
    }

    func markReady(_ id: String, restaurant: String, consumerGroup: String, applyingUnapplied: Bool) async throws(StorageError) -> ReadyOutcome {
        try checked { state in
            guard let order = state.orders[id] else { return .notFound }
            let owner = order.order.restaurant.isEmpty ? order.decidedBy : order.order.restaurant
            if let owner, owner != restaurant { return .otherRestaurant(owner) }
            guard order.status == .accepted || order.status == .assigned else { return .notPreparing(order.status.rawValue) }
            if order.kitchen == .ready { return .ready(order.status) }
            state.orders[id]?.kitchen = .ready
            return .ready(order.status)
        }
    }

    func decide(_ id: String, restaurant: String, decision: Decision) async throws(StorageError) -> DecisionOutcome {
        try checked { state in
            guard let order = state.orders[id] else { return .notFound }
            if !order.order.restaurant.isEmpty, order.order.restaurant != restaurant { return .otherRestaurant(order.order.restaurant) }
            if order.status == .placed {
                state.orders[id]?.status = decision.status
                state.orders[id]?.decision = decision
                state.orders[id]?.decidedBy = restaurant
                if decision.status == .accepted { state.orders[id]?.kitchen = .preparing }
                if case .accept(let minutes?) = decision { state.orders[id]?.readyAt = Self.clock + Int64(minutes) * 60_000 }
                return .decided(decision.status, readyAtUnixMs: state.orders[id]?.readyAt, repeated: false)
            }
            if order.decision?.status == decision.status, order.decidedBy == restaurant {
                return .decided(decision.status, readyAtUnixMs: order.readyAt, repeated: true)
            }
            return .notPlaced(order.status.rawValue)
        }
    }

    /// The store's clock: what decide.lua reads with TIME.
    static let clock: Int64 = 1_700_000_000_000

    func snapshot(_ id: String) async throws(StorageError) -> OrderSnapshot? {
        try checked { state in
            state.orders[id].map { OrderSnapshot(status: $0.status, driver: $0.driver, restaurant: $0.order.restaurant,
                                                 customer: $0.order.customer, lastEvent: .zero) }
        }
    }

    func parties(_ id: String) async throws(StorageError) -> OrderParties? {
        try checked { state in
            state.orders[id].map { OrderParties(customer: $0.order.customer, restaurant: $0.order.restaurant, driver: $0.driver) }
        }
    }

    func applyDeliveryEvents(_ events: [PlatformEvent]) async throws(StorageError) {
        try checked { state in
            for event in events {
                guard let order = state.orders[event.orderID], let next = order.status.after(event) else { continue }
                state.orders[event.orderID]?.status = next
                if let driver = event.driverID { state.orders[event.orderID]?.driver = driver }
            }
        }
    }
}

/// Menus the test sets, answered as the restaurant service would.
final class FixedMenus: MenuCatalog {
    let menus = Mutex<[String: GetMenuResponse]>([:])
    /// Thrown by every lookup while set (the restaurant service failing).
    let failure = Mutex<RPCError?>(nil)
    let lookups = Mutex(0)

    func menu(of restaurant: String, context: ServerContext) async throws(RPCError) -> GetMenuResponse? {
        lookups.withLock { $0 += 1 }
        if let failure = failure.withLock({ $0 }) { throw failure }
        return menus.withLock { $0[restaurant] }
    }
}

/// Counts the catch-ups asked for, per partition.
final class CountingCatchUp: EventCatchUp {
    let partitions = Mutex<[OrderPartition?]>([])
    func catchUp(_ partition: OrderPartition?) async throws(RPCError) { partitions.withLock { $0.append(partition) } }
}

@Suite struct OrderLogicUnitTests {
    private let context = ServerContext(path: "/test", requestMetadata: Metadata(), deadline: nil)

    /// The service on `store`. Its hub's client points at no server: these tests open no watch.
    private func withLogic(_ store: InMemoryOrderStore, catchUp: CountingCatchUp = CountingCatchUp(), menus: FixedMenus = FixedMenus(),
                           _ body: (OrderServiceLogic) async throws -> Void) async throws {
        try await withUnreachableHub { hub in try await body(OrderServiceLogic(store: store, menus: menus, events: catchUp, hub: hub,
                                         logger: quietLogger)) }
    }


    private func place(_ logic: OrderServiceLogic, restaurant: String = "r1") async throws -> String {
        try await logic.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 4.5, restaurantId: restaurant),
                                   context: context).orderId
    }

    @Test func placeOrderValidatesBeforeStoringAndNumbersTheOrders() async throws {
        let store = InMemoryOrderStore()
        try await withLogic(store) { logic in
            let bad = [
                PlaceOrderRequest(customerId: "", items: ["soup"], totalPrice: 1),
                PlaceOrderRequest(customerId: "c1", items: [], totalPrice: 1),
                PlaceOrderRequest(customerId: "c1", items: [""], totalPrice: 1),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: -1),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: .nan),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1, restaurantId: "no spaces"),
            ]
            for request in bad {
                #expect(await statusCode { try await logic.placeOrder(request, context: context) } == .invalidArgument, "\(request)")
            }
            #expect(store.state.withLock { $0.numbers } == 0, "nothing reached the store")
            #expect(try await place(logic) == "order_1")
            #expect(try await place(logic) == "order_2")
            let read = try await logic.getOrderStatus(GetOrderStatusRequest(orderId: "order_2"), context: context)
            #expect(read == GetOrderStatusResponse(orderId: "order_2", status: "PLACED", items: ["soup"], totalPrice: 4.5))
        }
    }

    @Test func aNumberHandedOutTwiceIsInternalAndOverwritesNothing() async throws {
        let store = InMemoryOrderStore()
        try await withLogic(store) { logic in
            let first = try await place(logic)
            #expect(first == "order_1")
            store.state.withLock { $0.repeatNumbers = true }
            #expect(await statusCode { try await place(logic, restaurant: "r2") } == .internal)
            #expect(store.state.withLock { $0.orders["order_1"]?.order.restaurant } == "r1")
        }
    }

    @Test func linesAndAddressesAreCheckedBeforeAnythingIsReadOrStored() async throws {
        let store = InMemoryOrderStore()
        let menus = FixedMenus()
        try await withLogic(store, menus: menus) { logic in
            let line = OrderLine(menuItemId: "soup", quantity: 1)
            let home = Address(street: "1 Main St", city: "Springfield")
            let bad = [
                PlaceOrderRequest(customerId: "c1", lines: [line]),  // no restaurant
                PlaceOrderRequest(customerId: "c1", items: ["soup"], restaurantId: "r1", lines: [line]),
                PlaceOrderRequest(customerId: "c1", totalPrice: 3, restaurantId: "r1", lines: [line]),
                PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: [OrderLine(menuItemId: "soup", quantity: 0)]),
                PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: [OrderLine(menuItemId: "soup", quantity: 100)]),
                PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: [OrderLine(menuItemId: "a b", quantity: 1)]),
                PlaceOrderRequest(customerId: "c1", restaurantId: "r1",
                                  lines: [OrderLine(menuItemId: "soup", quantity: 1, note: String(repeating: "n", count: 201))]),
                PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: Array(repeating: line, count: 101)),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1, requestId: "has space"),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1, deliveryAddress: Address(street: "1 Main St")),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1, deliveryAddress: Address(city: "Springfield")),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1,
                                  deliveryAddress: Address(street: "1 Main St", city: "Springfield", postalCode: String(repeating: "1", count: 21))),
                PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1,
                                  deliveryAddress: Address(street: String(repeating: "s", count: 201), city: "Springfield")),
            ]
            for request in bad {
                #expect(await statusCode { try await logic.placeOrder(request, context: context) } == .invalidArgument, "\(request)")
            }
            #expect(store.state.withLock { $0.numbers } == 0 && menus.lookups.withLock { $0 } == 0, "nothing was read or stored")
            // At the limits.
            let request = PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 1, deliveryAddress: home)
            let id = try await logic.placeOrder(request, context: context).orderId
            #expect(try await logic.getOrderStatus(GetOrderStatusRequest(orderId: id), context: context).deliveryAddress == home)
        }
    }

    @Test func pricingFailuresStoreNothing() async throws {
        let store = InMemoryOrderStore()
        let menus = FixedMenus()
        menus.menus.withLock { $0["r1"] = GetMenuResponse(restaurantId: "r1", items: [MenuItem(itemId: "soup", name: "Soup", priceCents: 450)]) }
        try await withLogic(store, menus: menus) { logic in
            let request = PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: [OrderLine(menuItemId: "soup", quantity: 3)])
            let placed = try await logic.placeOrder(request, context: context)
            // A menu without a currency is in the default one.
            #expect(placed.totalCents == 1350 && placed.currency == Money.defaultCurrency)
            menus.failure.withLock { $0 = RPCError(.unavailable, "the restaurant service is unavailable") }
            #expect(await statusCode { try await logic.placeOrder(request, context: context) } == .unavailable)
            #expect(store.state.withLock { $0.orders.count } == 1)
        }
    }

    @Test func aRetryStoresTheOrderItsFirstRequestClaimedButNeverStored() async throws {
        let store = InMemoryOrderStore()
        try await withLogic(store) { logic in
            let request = PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 4.5, requestId: "r-1")
            var unique = request
            unique.requestId = ""
            // The first request claimed order_7 for its id, then its replica died.
            _ = try await store.claimRequest(RequestKey(customer: "c1", requestID: "r-1"),
                                             fingerprint: String(fnv1a(unique.serializedBytes()), radix: 16), orderID: "order_7")
            let placed = try await logic.placeOrder(request, context: context)
            #expect(placed.orderId == "order_7" && placed.status == "PLACED")
            #expect(store.state.withLock { Set($0.orders.keys) } == ["order_7"])
            #expect(try await logic.placeOrder(request, context: context).orderId == "order_7")
            #expect(store.state.withLock { $0.orders.count } == 1)
        }
    }

    @Test func cancelAnswersAsTheSeedDid() async throws {
        try await withLogic(InMemoryOrderStore()) { logic in
            let id = try await place(logic)
            #expect(try await logic.cancelOrder(CancelOrderRequest(orderId: id), context: context).status == "CANCELED")
            #expect(try await logic.cancelOrder(CancelOrderRequest(orderId: id), context: context).status == "COULD_NOT_CANCEL")
            #expect(await statusCode { try await logic.cancelOrder(CancelOrderRequest(orderId: "order_9"), context: context) } == .notFound)
            #expect(await statusCode { try await logic.cancelOrder(CancelOrderRequest(orderId: ""), context: context) } == .invalidArgument)
        }
    }

    @Test func eachDecisionOutcomeHasItsStatus() async throws {
        try await withLogic(InMemoryOrderStore()) { logic in
            let id = try await place(logic)
            func decide(_ restaurant: String, _ decision: String, _ order: String? = nil) async throws -> String {
                try await logic.recordRestaurantDecision(RecordRestaurantDecisionRequest(
                    orderId: order ?? id, restaurantId: restaurant, decision: decision), context: context).status
            }
            #expect(await statusCode { try await decide("r1", "MAYBE") } == .invalidArgument)
            #expect(await statusCode { try await decide("r1", "PLACED") } == .invalidArgument)
            #expect(await statusCode { try await decide("r2", "ACCEPTED") } == .permissionDenied)
            #expect(try await decide("r1", "ACCEPTED") == "ACCEPTED")
            #expect(try await decide("r1", "ACCEPTED") == "ACCEPTED", "the same decision again answers the same")
            #expect(await statusCode { try await decide("r1", "REJECTED") } == .failedPrecondition)
            #expect(await statusCode { try await decide("r1", "ACCEPTED", "order_9") } == .notFound)
        }
    }

    @Test func aReadThatIsBehindCatchesUpOnTheOrdersPartitionThenReadsPlainly() async throws {
        let store = InMemoryOrderStore()
        let catchUp = CountingCatchUp()
        try await withLogic(store, catchUp: catchUp) { logic in
            let id = try await place(logic)
            store.state.withLock { $0.behindReads = 1 }
            #expect(try await logic.getOrderStatus(GetOrderStatusRequest(orderId: id), context: context).status == "PLACED")
            #expect(catchUp.partitions.withLock { $0 } == [OrderPartition(order: id)])
            #expect(store.state.withLock { $0.reads } == [true, false])
            // Not behind: one read, applying what is unapplied, and no catch-up.
            _ = try await logic.getOrderStatus(GetOrderStatusRequest(orderId: id), context: context)
            #expect(catchUp.partitions.withLock { $0.count } == 1)
            #expect(store.state.withLock { $0.reads } == [true, false, true])
        }
    }

    @Test func storageFailuresAreUnavailableOrInternalAndNeverAnAnswer() async throws {
        let store = InMemoryOrderStore()
        try await withLogic(store) { logic in
            let id = try await place(logic)
            for (failure, expected) in [(StorageError(.unavailable, "down"), StatusCode.unavailable),
                                        (StorageError(.failed, "broken"), StatusCode.internal)] {
                store.state.withLock { $0.failure = failure }
                #expect(await statusCode { try await place(logic) } == expected)
                #expect(await statusCode { try await logic.getOrderStatus(GetOrderStatusRequest(orderId: id), context: context) } == expected)
                #expect(await statusCode { try await logic.cancelOrder(CancelOrderRequest(orderId: id), context: context) } == expected)
                #expect(await statusCode {
                    try await logic.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r1", decision: "ACCEPTED"),
                                                             context: context)
                } == expected)
            }
        }
    }

    @Test func aDriverMissingFromTheOrderIsLookedUpAgainAfterCatchingUp() async throws {
        let store = InMemoryOrderStore()
        let catchUp = CountingCatchUp()
        try await withLogic(store, catchUp: catchUp) { logic in
            let id = try await place(logic)
            let driver = Caller(subject: "d7", role: .driver)
            #expect(try await logic.parties(ofOrder: id, for: driver)?.customer == "c1")
            #expect(catchUp.partitions.withLock { $0 } == [OrderPartition(order: id)])
            let customer = Caller(subject: "c1", role: .customer)
            _ = try await logic.parties(ofOrder: id, for: customer)
            #expect(catchUp.partitions.withLock { $0.count } == 1, "only a driver not yet on the order makes it catch up")
        }
    }
}
