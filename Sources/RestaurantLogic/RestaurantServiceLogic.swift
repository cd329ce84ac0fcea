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
            try await responses.write(RestaurantOrderUpdate(
                orderId: event.orderID, status: status.rawValue, customerId: event.customerID ?? "",
                items: event.items ?? [], totalPrice: event.totalPrice ?? 0, driverId: event.driverID ?? "",
                updatedAtUnixMs: Int64(event.id?.milliseconds ?? 0)))
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
        try await stored { () async throws(StorageError) in
            try await menus.update(request.restaurantId, items: items, currency: request.currency.isEmpty ? nil : currency)
        }
        return UpdateMenuResponse(status: "SUCCESS")
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
        return GetMenuResponse(restaurantId: request.restaurantId, items: menu.items, currency: menu.currency)
    }

    public func acceptOrder(_ request: AcceptOrderRequest, context: ServerContext) async throws -> AcceptOrderResponse {
        let status = try await decide(orderID: request.orderId, restaurantID: request.restaurantId, .accepted, context)
        return AcceptOrderResponse(orderId: request.orderId, status: status)
    }

    public func rejectOrder(_ request: RejectOrderRequest, context: ServerContext) async throws -> RejectOrderResponse {
        let status = try await decide(orderID: request.orderId, restaurantID: request.restaurantId, .rejected, context)
        return RejectOrderResponse(orderId: request.orderId, status: status)
    }

    private func decide(orderID: String, restaurantID: String, _ decision: OrderStatus, _ context: ServerContext) async throws(RPCError) -> String {
        try Identifier.validate(restaurantID, field: "restaurant_id")
        try Identifier.validate(orderID, field: "order_id")
        do {
            return try await orders.recordRestaurantDecision(
                RecordRestaurantDecisionRequest(orderId: orderID, restaurantId: restaurantID, decision: decision.rawValue),
                options: orderService.options(for: context)).status
        } catch {
            throw orderService.failure(error, passing: [.notFound, .failedPrecondition, .permissionDenied, .invalidArgument])
        }
    }
}

/// The restaurant service's storage: menus.
public protocol MenuStore: Sendable {
    /// Adds or replaces these items of the restaurant's menu (their prices complete), at once;
    /// new items go last. A `currency` becomes the restaurant's (nil keeps the one it has).
    func update(_ restaurant: String, items: [MenuItem], currency: String?) async throws(StorageError)
    /// The restaurant's currency; Money.defaultCurrency when it never named one.
    func currency(of restaurant: String) async throws(StorageError) -> String
    /// The restaurant's menu, items in the order they were first added; no items when it has none.
    func menu(of restaurant: String) async throws(StorageError) -> Menu
}

/// A restaurant's menu: every price on it is in `currency`.
public struct Menu: Sendable, Equatable {
    public var items: [MenuItem]
    public var currency: String
}

/// Menus in Redis.
public struct RedisMenuStore: MenuStore {
    private let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    public func update(_ restaurant: String, items: [MenuItem], currency: String?) async throws(StorageError) {
        let keys = MenuKeys(restaurant)
        let fields = items.flatMap { item in
            [item.itemId, item.name, "\(item.price)", item.description, "\(item.priceCents)", item.unavailable ? "1" : "0"]
        }
        _ = try await redis.run(Scripts.updateMenu, keys: [keys.menu, keys.order, keys.profile],
                                arguments: [currency ?? ""] + fields, change: true)
    }

    public func currency(of restaurant: String) async throws(StorageError) -> String {
        let reply: RedisReply
        do { reply = try await redis.send(["HGET", MenuKeys(restaurant).profile, "currency"]) } catch { throw StorageError(error) }
        return reply.string ?? Money.defaultCurrency
    }

    public func menu(of restaurant: String) async throws(StorageError) -> Menu {
        let keys = MenuKeys(restaurant)
        let flat = try await redis.run(Scripts.getMenu, keys: [keys.menu, keys.order, keys.profile], change: false).array ?? []
        let named = flat.first?.string ?? ""
        let currency = named.isEmpty ? Money.defaultCurrency : named
        let items = stride(from: 1, to: flat.count - 5, by: 6).map { index in
            let price = flat[index + 2].string.flatMap(Double.init) ?? 0
            // Items stored before prices had minor units: their price, rounded to the minor unit.
            let cents = flat[index + 4].string.flatMap { Int64($0) }
                ?? Money.minorUnits(price, currency: currency, limit: .max) ?? 0
            return MenuItem(itemId: flat[index].string ?? "", name: flat[index + 1].string ?? "", price: price,
                            description: flat[index + 3].string ?? "", priceCents: cents, unavailable: flat[index + 5].string == "1")
        }
        return Menu(items: items, currency: currency)
    }
}

/// Where a restaurant's menu lives in Redis.
struct MenuKeys {
    /// Hash: item id -> JSON [name, price, description, price in minor units, unavailable].
    let menu: String
    /// List: item ids, in the order they were first added.
    let order: String
    /// Hash: the restaurant's own settings (currency).
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
