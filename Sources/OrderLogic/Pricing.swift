// Orders priced from the restaurant's menu, the way FTGO's order service and Online Boutique's
// checkout do it: the client names menu items and quantities, never prices. The menu belongs to
// the restaurant service, so the order service asks it (GetMenu, one call, which is one Redis
// round trip there) through a MenuCatalog, instead of reading the restaurant's keys. The lines
// are priced at that moment and frozen into the order: names, unit prices and the total in the
// menu's currency, in integer minor units (Money). The seed's `items` and `total_price` are
// derived from them, so a client that knows nothing of lines still reads a sensible order.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos

/// Where the order service reads a restaurant's menu.
public protocol MenuCatalog: Sendable {
    /// The restaurant's menu, nil when it has none; called while serving `context`.
    func menu(of restaurant: String, context: ServerContext) async throws(RPCError) -> GetMenuResponse?
}

/// Menus from the restaurant service.
public struct RestaurantMenuCatalog: MenuCatalog {
    private let restaurants: RestaurantServiceClient
    private let restaurantService: PeerService

    /// `token` is presented to the restaurant service when it requires one.
    public init(restaurants: RestaurantServiceClient, token: ServiceTokenFile?, logger: Logger) {
        self.restaurants = restaurants
        restaurantService = PeerService(name: "the restaurant service", token: token, logger: logger)
    }

    public func menu(of restaurant: String, context: ServerContext) async throws(RPCError) -> GetMenuResponse? {
        do {
            return try await restaurants.getMenu(GetMenuRequest(restaurantId: restaurant), options: restaurantService.options(for: context))
        } catch where error.code == .notFound {
            return nil
        } catch {
            throw restaurantService.failure(error, passing: [])
        }
    }
}

/// An order's lines as priced from a menu.
public struct PricedOrder: Sendable, Equatable {
    public var lines: [PricedLine]
    public var currency: String
    public var totalCents: Int64

    /// The seed's view of the lines: "<quantity> x <name>", with " (<note>)" when there is one.
    public var items: [String] {
        lines.map { line in "\(line.quantity) x \(line.name)" + (line.note.isEmpty ? "" : " (\(line.note))") }
    }

    /// The total in the currency's major unit, as the seed's `total_price`.
    public var totalPrice: Double { Money.major(totalCents, currency: currency) }

    /// Prices `lines` from `menu`: FAILED_PRECONDITION while the restaurant is paused, or naming
    /// the first item that is not on the menu or is unavailable. The lines are valid already
    /// (OrderServiceLogic checks them).
    public init(_ lines: [OrderLine], menu: GetMenuResponse) throws(RPCError) {
        guard menu.status != .paused else {
            throw RPCError(.failedPrecondition, "restaurant \(menu.restaurantId) is paused"
                + (menu.pausedUntilUnixMs > 0 ? " until \(menu.pausedUntilUnixMs) (ms since the Unix epoch)" : " and takes no orders"))
        }
        var items: [String: MenuItem] = [:]
        for item in menu.items { items[item.itemId] = item }
        currency = menu.currency.isEmpty ? Money.defaultCurrency : menu.currency
        totalCents = 0
        self.lines = []
        for line in lines {
            guard let item = items[line.menuItemId] else {
                throw RPCError(.failedPrecondition, "menu item \(line.menuItemId) is not on restaurant \(menu.restaurantId)'s menu")
            }
            guard !item.unavailable else {
                throw RPCError(.failedPrecondition, "menu item \(line.menuItemId) is unavailable at restaurant \(menu.restaurantId)")
            }
            // At most 100 lines of 99 items of Money.maxItemMinorUnits: far inside Int64, for a
            // menu that keeps to the limit (the restaurant service checks it).
            guard (0...Money.maxItemMinorUnits).contains(item.priceCents) else {
                throw RPCError(.failedPrecondition, "menu item \(line.menuItemId) has no valid price at restaurant \(menu.restaurantId)")
            }
            let lineTotal = item.priceCents * Int64(line.quantity)
            self.lines.append(PricedLine(menuItemId: item.itemId, name: item.name, quantity: line.quantity, note: line.note,
                                         unitPriceCents: item.priceCents, lineTotalCents: lineTotal))
            totalCents += lineTotal
        }
    }
}
