// RestaurantService: menus in Redis; decisions on orders through the order service.
//
// Menus live in a MenuStore. In Redis (RedisMenuStore) a menu is a hash (item_id -> JSON of name,
// price, description, encoded by Redis's cjson inside the function) plus a list that keeps items
// in the order they were first added (MenuKeys, both tagged with the restaurant id, so they share
// a Redis Cluster slot); upserting both is one function (Lua/update_menu.lua), so readers never
// see half an update. Accepting or rejecting goes through OrderService.RecordRestaurantDecision, which
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
    private let serviceToken: ServiceTokenFile?
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
        self.serviceToken = serviceToken
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
        for item in request.items {
            try Identifier.validate(item.itemId, field: "item_id")
            guard !item.name.isEmpty, item.name.utf8.count <= Self.maxTextLength else {
                throw RPCError(.invalidArgument, "item \(item.itemId): name must be 1 to \(Self.maxTextLength) bytes")
            }
            guard item.description.utf8.count <= Self.maxTextLength else {
                throw RPCError(.invalidArgument, "item \(item.itemId): description is longer than \(Self.maxTextLength) bytes")
            }
            try validateAmount(item.price, field: "item \(item.itemId): price")
        }
        try await stored { () async throws(StorageError) in try await menus.update(request.restaurantId, items: request.items) }
        return UpdateMenuResponse(status: "SUCCESS")
    }

    public func getMenu(_ request: GetMenuRequest, context: ServerContext) async throws -> GetMenuResponse {
        try Identifier.validate(request.restaurantId, field: "restaurant_id")
        let items = try await stored { () async throws(StorageError) in try await menus.menu(of: request.restaurantId) }
        guard !items.isEmpty else { throw RPCError(.notFound, "restaurant \(request.restaurantId) has no menu") }
        return GetMenuResponse(restaurantId: request.restaurantId, items: items)
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
        // The caller's deadline bounds our call to the order service too.
        let timeout = context.deadline.map { $0 - .now } ?? .seconds(10)
        let options = serviceToken?.authorize(CallOptions(timeout: timeout)) ?? CallOptions(timeout: timeout)
        do {
            let response = try await orders.recordRestaurantDecision(
                RecordRestaurantDecisionRequest(orderId: orderID, restaurantId: restaurantID, decision: decision.rawValue),
                options: options)
            return response.status
        } catch {
            switch error.code {
            case .unavailable:
                logger.error("order service unreachable", metadata: ["error": "\(error)"])
                throw RPCError(.unavailable, "the order service is unavailable: \(error.message)")
            case .deadlineExceeded:
                // The deadline (the caller's, or ours of 10 s) ran out while we waited: say so.
                throw RPCError(.deadlineExceeded, "the order service did not answer in time")
            case .notFound, .failedPrecondition, .permissionDenied, .invalidArgument:
                throw error
            case .unauthenticated:
                // Our own credentials were refused: the caller did nothing wrong, and nothing changed.
                logger.error("the order service refused our service token", metadata: ["error": "\(error)"])
                throw RPCError(.unavailable, "the order service refused the restaurant service's credentials: \(error.message)")
            default:
                logger.error("order service failed", metadata: ["error": "\(error)"])
                throw RPCError(.internal, "the order service failed: \(error)")
            }
        }
    }
}

/// The restaurant service's storage: menus.
public protocol MenuStore: Sendable {
    /// Adds or replaces these items of the restaurant's menu, at once; new items go last.
    func update(_ restaurant: String, items: [MenuItem]) async throws(StorageError)
    /// The restaurant's menu in the order the items were first added; empty when it has none.
    func menu(of restaurant: String) async throws(StorageError) -> [MenuItem]
}

/// Menus in Redis.
public struct RedisMenuStore: MenuStore {
    private let redis: RedisClient

    public init(redis: RedisClient) { self.redis = redis }

    public func update(_ restaurant: String, items: [MenuItem]) async throws(StorageError) {
        let keys = MenuKeys(restaurant)
        _ = try await redis.run(Scripts.updateMenu, keys: [keys.menu, keys.order],
                                arguments: items.flatMap { [$0.itemId, $0.name, "\($0.price)", $0.description] }, change: true)
    }

    public func menu(of restaurant: String) async throws(StorageError) -> [MenuItem] {
        let keys = MenuKeys(restaurant)
        let flat = try await redis.run(Scripts.getMenu, keys: [keys.menu, keys.order], change: false).array ?? []
        return stride(from: 0, to: flat.count - 3, by: 4).map { index in
            MenuItem(itemId: flat[index].string ?? "", name: flat[index + 1].string ?? "",
                     price: flat[index + 2].string.flatMap(Double.init) ?? 0, description: flat[index + 3].string ?? "")
        }
    }
}

/// Where a restaurant's menu lives in Redis.
struct MenuKeys {
    /// Hash: item id -> JSON [name, price, description].
    let menu: String
    /// List: item ids, in the order they were first added.
    let order: String

    init(_ restaurant: String) {
        menu = "restaurant:{\(restaurant)}:menu"
        order = menu + ":order"
    }
}

/// The functions the service runs: its Lua/*.lua as one library.
enum Scripts {
    static let library = LuaLibrary(module: "menu", functions: ["update_menu": MenuLua.updateMenu, "get_menu": MenuLua.getMenu],
                                    readOnly: ["get_menu"])
    static let updateMenu = library.function("update_menu")
    static let getMenu = library.function("get_menu")
}
