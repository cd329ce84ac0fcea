// RestaurantService: menus in Redis; decisions on orders through the order service.
//
// Menus live in a MenuStore. In Redis (RedisMenuStore) a menu is a hash (item_id -> JSON of name,
// price, description, price in minor units and availability, encoded by Redis's cjson inside the
// function) plus a list that keeps items in the order they were first added, and the
// restaurant's profile (its currency); all three are tagged with the restaurant id (MenuKeys), so
// they share a Redis Cluster slot, and upserting them is one function (Lua/update_menu.lua), so
// readers never see half an update. Prices are integer minor units of the restaurant's one
// currency (Money); a seed client's double `price` is kept as it gave it, and its minor units
// derived, rounded. The order service prices orders from GetMenu. Accepting or rejecting goes through OrderService.RecordRestaurantDecision, which
// changes the order's status, records the event and publishes ORDER_ACCEPTED / ORDER_REJECTED in
// one atomic step: an order that is canceled, unknown or another restaurant's cannot be accepted,
// and when the order service is down nothing is published.
//
// WatchRestaurantOrders follows the restaurant's topic of the process's EventHub: every event of
// one of its orders carries the restaurant, so new orders, decisions, cancellations and delivery
// stages all reach the kitchen screen as they happen.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient

/// The RestaurantService implementation.
public struct RestaurantServiceLogic: RestaurantServiceProvider {
    public static let maxMenuItems = 1000
    public static let maxTextLength = 1024

    private let menus: any MenuStore
    private let orders: OrderServiceClient
    private let orderService: PeerService
    private let hub: EventHub
    private let logger: Logger

    /// `orders` reaches the order service (its transport is the caller's choice); `serviceToken`
    /// is presented on those calls when the order service requires one.
    public init(redis: RedisClient, orders: OrderServiceClient, serviceToken: ServiceTokenFile? = nil, logger: Logger) {
        self.init(menus: RedisMenuStore(redis: redis), orders: orders, serviceToken: serviceToken,
                  hub: EventHub(redis: redis, logger: logger), logger: logger)
    }

    /// The service on any menu store.
    init(menus: any MenuStore, orders: OrderServiceClient, serviceToken: ServiceTokenFile? = nil, hub: EventHub, logger: Logger) {
        self.menus = menus
        self.orders = orders
        orderService = PeerService(name: "the order service", token: serviceToken, logger: logger)
        self.hub = hub
        self.logger = logger
    }

    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }

    public func watchRestaurantOrders(
        _ request: WatchRestaurantOrdersRequest, responses: RPCWriter<RestaurantOrderUpdate>, context: ServerContext
    ) async throws {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        let subscription = try await hub.subscribe(.restaurant(request.restaurantId))
        defer { subscription.cancel() }
        for try await event in subscription {
            guard let status = event.announcedStatus else { continue }
            let kitchen: KitchenStatus? = switch event.kind {
            case .orderAccepted: .preparing
            case .orderReady: .ready
            default: nil
            }
            try await responses.write(RestaurantOrderUpdate(
                orderId: event.orderID, status: status.rawValue, customerId: event.customerID ?? "",
                items: event.items ?? [], totalPrice: event.totalPrice ?? 0, driverId: event.driverID ?? "",
                updatedAtUnixMs: Int64(event.id?.milliseconds ?? 0), kitchenStatus: kitchen?.rawValue ?? ""))
        }
    }

    public func updateMenu(_ request: UpdateMenuRequest, context: ServerContext) async throws -> UpdateMenuResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        guard !request.items.isEmpty else { throw RPCError(.invalidArgument, "a menu update needs at least one item") }
        guard request.items.count <= Self.maxMenuItems else {
            throw RPCError(.invalidArgument, "a menu has at most \(Self.maxMenuItems) items")
        }
        guard request.currency.isEmpty || Money.isCurrencyCode(request.currency) else {
            throw RPCError(.invalidArgument, "currency must be an ISO 4217 code such as USD, got \(request.currency)")
        }
        // The minor units depend on the currency: the update's, else the one the menu has.
        let currency = request.currency.isEmpty
            ? try await stored { () async throws(StorageError) in try await menus.currency(of: request.restaurantId) }
            : request.currency
        var items = request.items
        for index in items.indices {
            try Self.validate(&items[index], currency: currency)
        }
        let outcome = try await stored { () async throws(StorageError) in
            try await menus.update(request.restaurantId, items: items, setting: request.currency.isEmpty ? nil : currency, pricedIn: currency)
        }
        switch outcome {
        case .updated: return UpdateMenuResponse(status: "SUCCESS")
        case .currencyChanged:
            throw RPCError(.aborted, "restaurant \(request.restaurantId)'s currency changed during the update; send it again")
        case .everyItemNeeded:
            throw RPCError(.failedPrecondition, "changing the currency of restaurant \(request.restaurantId) needs every item of its menu in the same update, priced in \(currency)")
        }
    }

    /// Checks one item of a menu update and completes its price: the minor units from `price`
    /// when only that is given, or `price` from them. `price` keeps what a client gave.
    static func validate(_ item: inout MenuItem, currency: String) throws(RPCError) {
        try Identifier.validate(item.itemId, field: "item_id")
        guard !item.name.isEmpty, item.name.utf8.count <= maxTextLength else {
            throw RPCError(.invalidArgument, "item \(item.itemId): name must be 1 to \(maxTextLength) bytes")
        }
        guard item.description.utf8.count <= maxTextLength else {
            throw RPCError(.invalidArgument, "item \(item.itemId): description is longer than \(maxTextLength) bytes")
        }
        try validateAmount(item.price, field: "item \(item.itemId): price")
        guard (0...Money.maxItemMinorUnits).contains(item.priceCents),
              let fromPrice = Money.minorUnits(item.price, currency: currency, limit: Money.maxItemMinorUnits) else {
            throw RPCError(.invalidArgument, "item \(item.itemId): the price must be at most \(Money.maxItemMinorUnits) minor units of \(currency)")
        }
        if item.priceCents == 0 {
            item.priceCents = fromPrice
        } else if item.price == 0 {
            item.price = Money.major(item.priceCents, currency: currency)
        } else if fromPrice != item.priceCents {
            throw RPCError(.invalidArgument, "item \(item.itemId): price \(item.price) and price_cents \(item.priceCents) disagree in \(currency)")
        }
    }

    public func getMenu(_ request: GetMenuRequest, context: ServerContext) async throws -> GetMenuResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        let menu = try await stored { () async throws(StorageError) in try await menus.menu(of: request.restaurantId) }
        guard !menu.items.isEmpty else { throw RPCError(.notFound, "restaurant \(request.restaurantId) has no menu") }
        let pause = menu.pause.flatMap { $0.holds(at: unixMilliseconds()) ? $0 : nil }
        return GetMenuResponse(restaurantId: request.restaurantId, items: menu.items, currency: menu.currency,
                               status: pause == nil ? .open : .paused, pausedUntilUnixMs: pause?.until ?? 0)
    }

    /// The longest pause with an end: a year.
    static let maxPauseMs: Int64 = 366 * 24 * 60 * 60 * 1000

    public func setRestaurantStatus(_ request: SetRestaurantStatusRequest, context: ServerContext) async throws -> SetRestaurantStatusResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        let pause: Pause?
        switch request.status {
        case .open:
            guard request.pausedUntilUnixMs == 0 else { throw RPCError(.invalidArgument, "paused_until_unix_ms goes with PAUSED only") }
            pause = nil
        case .paused:
            let now = unixMilliseconds(), until = request.pausedUntilUnixMs
            guard until == 0 || (now < until && until - now <= Self.maxPauseMs) else {
                throw RPCError(.invalidArgument, "paused_until_unix_ms must be in the next year (or 0 for until OPEN), got \(until)")
            }
            pause = Pause(until: until)
        default:
            throw RPCError(.invalidArgument, "status must be OPEN or PAUSED")
        }
        try await stored { () async throws(StorageError) in try await menus.setPause(request.restaurantId, pause) }
        logger.info("restaurant status set", metadata: ["restaurant": "\(request.restaurantId)", "paused_until": "\(pause.map { "\($0.until)" } ?? "open")"])
        return SetRestaurantStatusResponse(restaurantId: request.restaurantId, status: request.status, pausedUntilUnixMs: pause?.until ?? 0)
    }

    public func acceptOrder(_ request: AcceptOrderRequest, context: ServerContext) async throws -> AcceptOrderResponse {
        let decided = try await decide(RecordRestaurantDecisionRequest(orderId: request.orderId, restaurantId: request.restaurantId,
                                                                      decision: OrderStatus.accepted.rawValue, prepMinutes: request.prepMinutes),
                                       context)
        return AcceptOrderResponse(orderId: request.orderId, status: decided.status, estimatedReadyAtUnixMs: decided.estimatedReadyAtUnixMs)
    }

    public func rejectOrder(_ request: RejectOrderRequest, context: ServerContext) async throws -> RejectOrderResponse {
        guard let reason = Self.rejectionReasons[request.reason] else {
            throw RPCError(.invalidArgument, "reason must be OUT_OF_STOCK, TOO_BUSY, CLOSED or OTHER")
        }
        let decided = try await decide(RecordRestaurantDecisionRequest(orderId: request.orderId, restaurantId: request.restaurantId,
                                                                      decision: OrderStatus.rejected.rawValue, rejectReason: reason.rawValue,
                                                                      rejectMessage: request.message),
                                       context)
        return RejectOrderResponse(orderId: request.orderId, status: decided.status)
    }

    public func markOrderReady(_ request: MarkOrderReadyRequest, context: ServerContext) async throws -> MarkOrderReadyResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        try Identifier.validate(request.orderId, field: "order_id")
        do {
            let marked = try await orders.recordOrderReady(RecordOrderReadyRequest(orderId: request.orderId, restaurantId: request.restaurantId),
                                                           options: orderService.options(for: context))
            return MarkOrderReadyResponse(orderId: marked.orderId, status: marked.status, kitchenStatus: marked.kitchenStatus)
        } catch {
            throw orderService.failure(error, passing: Self.orderServiceVerdicts)
        }
    }

    /// The order service's answers that judge the caller's request, passed on as they are.
    static let orderServiceVerdicts: Set<StatusCode> = [.notFound, .failedPrecondition, .permissionDenied, .invalidArgument]

    /// RejectOrder's reasons as orders and events keep them; unspecified is OTHER.
    static let rejectionReasons: [RejectReason: RejectionReason] = [
        .rejectReasonUnspecified: .other, .outOfStock: .outOfStock, .tooBusy: .tooBusy, .closed: .closed, .other: .other,
    ]

    /// Has the order service record the decision (it checks the decision's details: minutes,
    /// reason and message).
    private func decide(_ request: RecordRestaurantDecisionRequest, _ context: ServerContext) async throws(RPCError) -> RecordRestaurantDecisionResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        try Identifier.validate(request.orderId, field: "order_id")
        do {
            return try await orders.recordRestaurantDecision(request, options: orderService.options(for: context))
        } catch {
            throw orderService.failure(error, passing: Self.orderServiceVerdicts)
        }
    }
}

/// The restaurant service's storage: menus.
public protocol MenuStore: Sendable {
    /// Adds or replaces these items of the restaurant's menu (their minor units computed in
    /// `pricedIn`), at once; new items go last. A currency to `set` becomes the restaurant's (nil
    /// keeps the one it has); changing it needs every item of the menu in the update.
    func update(_ restaurant: String, items: [MenuItem], setting currency: String?, pricedIn: String) async throws(StorageError) -> MenuUpdate
    /// The restaurant's currency; Money.defaultCurrency when it never named one.
    func currency(of restaurant: String) async throws(StorageError) -> String
    /// The restaurant's menu, items in the order they were first added; no items when it has none.
    func menu(of restaurant: String) async throws(StorageError) -> Menu
    /// Pauses the restaurant, or (nil) opens it.
    func setPause(_ restaurant: String, _ pause: Pause?) async throws(StorageError)
}

public enum MenuUpdate: Sendable, Equatable {
    case updated
    /// The restaurant's currency is not `pricedIn` any more (changed meanwhile): nothing changed.
    case currencyChanged
    /// The currency changes, and the update leaves out items of the menu: nothing changed.
    case everyItemNeeded
}

/// A restaurant's menu: every price on it is in `currency`; `pause` as last set (it may have
/// ended by now).
public struct Menu: Sendable, Equatable {
    public var items: [MenuItem]
    public var currency: String
    public var pause: Pause?
}

/// A restaurant's pause: until a time (ms since the Unix epoch), or (0) until it opens again.
public struct Pause: Sendable, Equatable {
    public var until: Int64

    /// Whether it still holds at `now` (ms since the Unix epoch).
    public func holds(at now: Int64) -> Bool { until == 0 || now < until }
}

/// Menus in Redis.
public struct RedisMenuStore: MenuStore {
    private let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    public func update(_ restaurant: String, items: [MenuItem], setting currency: String?,
                       pricedIn: String) async throws(StorageError) -> MenuUpdate {
        let keys = MenuKeys(restaurant)
        let fields = items.flatMap { item in
            [item.itemId, item.name, "\(item.price)", item.description, "\(item.priceCents)", item.unavailable ? "1" : "0"]
        }
        let reply = try await redis.run(Scripts.updateMenu, keys: [keys.menu, keys.order, keys.profile],
                                        arguments: [currency ?? "", pricedIn, Money.defaultCurrency] + fields, change: true)
        switch reply.string {
        case "SUCCESS": return .updated
        case "CURRENCY_CHANGED": return .currencyChanged
        case "EVERY_ITEM_NEEDED": return .everyItemNeeded
        default: throw StorageError(.failed, "update_menu answered \(reply)")
        }
    }

    public func currency(of restaurant: String) async throws(StorageError) -> String {
        let reply: RedisReply
        do { reply = try await redis.send(["HGET", MenuKeys(restaurant).profile, "currency"]) } catch { throw StorageError(error) }
        return reply.string ?? Money.defaultCurrency
    }

    public func menu(of restaurant: String) async throws(StorageError) -> Menu {
        let keys = MenuKeys(restaurant)
        let flat = try await redis.run(Scripts.getMenu, keys: [keys.menu, keys.order, keys.profile], change: false).array ?? []
        guard flat.count >= 3 else { throw StorageError(.failed, "get_menu answered \(flat)") }
        let named = flat[0].string ?? ""
        let currency = named.isEmpty ? Money.defaultCurrency : named
        let pause = flat[1].string == "1" ? Pause(until: flat[2].string.flatMap { Int64($0) } ?? 0) : nil
        let items = stride(from: 3, to: flat.count - 5, by: 6).map { index in
            let price = flat[index + 2].string.flatMap(Double.init) ?? 0
            // Items stored before prices had minor units: their price, rounded to the minor unit; one
            // above today's limit (the old rules allowed any) cannot be ordered.
            let stored = flat[index + 4].string.flatMap { Int64($0) }
            let cents = stored ?? Money.minorUnits(price, currency: currency, limit: Money.maxItemMinorUnits)
            return MenuItem(itemId: flat[index].string ?? "", name: flat[index + 1].string ?? "", price: price,
                            description: flat[index + 3].string ?? "", priceCents: cents ?? 0,
                            unavailable: flat[index + 5].string == "1" || cents == nil)
        }
        return Menu(items: items, currency: currency, pause: pause)
    }

    public func setPause(_ restaurant: String, _ pause: Pause?) async throws(StorageError) {
        let profile = MenuKeys(restaurant).profile
        let command = pause.map { ["HSET", profile, "paused", "1", "paused_until", "\($0.until)"] } ?? ["HDEL", profile, "paused", "paused_until"]
        do { _ = try await redis.send(command, waitForReplicas: true) } catch { throw StorageError(error) }
    }
}

/// Where a restaurant's menu lives in Redis.
struct MenuKeys {
    /// Hash: item id -> JSON [name, price, description, price in minor units, unavailable].
    let menu: String
    /// List: item ids, in the order they were first added.
    let order: String
    /// Hash: the restaurant's own settings: currency; paused ("1") and paused_until (ms, 0 for
    /// until opened) while it pauses.
    let profile: String

    init(_ restaurant: String) {
        menu = "restaurant:{\(restaurant)}:menu"
        order = menu + ":order"
        profile = "restaurant:{\(restaurant)}:profile"
    }
}

/// The functions the service runs: its Lua/*.lua as one library.
enum Scripts {
    static let library = LuaLibrary(module: "menu", functions: ["update_menu": MenuLua.updateMenu, "get_menu": MenuLua.getMenu],
                                    readOnly: ["get_menu"])
    static let updateMenu = library.function("update_menu")
    static let getMenu = library.function("get_menu")
}
