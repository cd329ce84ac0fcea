// Orders priced from the menu, idempotent PlaceOrder and delivery addresses, over gRPC against
// the running services: the order service prices lines through the restaurant service's
// GetMenu, freezes them into the order, and shows the seed's fields derived from them; a
// request id races to one order. The input rules without a server are in OrderLogicUnitTests.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct PricedOrderTests {
    private let menu = [
        MenuItem(itemId: "margherita", name: "Margherita", description: "tomato, mozzarella", priceCents: 1250),
        MenuItem(itemId: "cola", name: "Cola", price: 2.5),
        MenuItem(itemId: "tiramisu", name: "Tiramisu", priceCents: 600, unavailable: true),
    ]

    private func setMenu(_ platform: Platform, currency: String = "EUR") async throws {
        _ = try await platform.restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: menu, currency: currency))
    }

    @Test func linesArePricedFromTheMenuAndFrozenIntoTheOrder() async throws {
        try await withPlatform { platform in
            try await setMenu(platform)
            let orders = platform.orders
            let address = Address(street: "1 Main St", city: "Springfield", postalCode: "12345", notes: "ring twice")
            let placed = try await orders.placeOrder(PlaceOrderRequest(
                customerId: "c1", restaurantId: "r1",
                lines: [OrderLine(menuItemId: "margherita", quantity: 2, note: "no basil"), OrderLine(menuItemId: "cola", quantity: 3)],
                deliveryAddress: address))
            #expect(placed.status == "PLACED")
            #expect(placed.totalCents == 3250 && placed.currency == "EUR")
            let expected = GetOrderStatusResponse(
                orderId: placed.orderId, status: "PLACED", items: ["2 x Margherita (no basil)", "3 x Cola"], totalPrice: 32.5,
                lines: [PricedLine(menuItemId: "margherita", name: "Margherita", quantity: 2, note: "no basil", unitPriceCents: 1250, lineTotalCents: 2500),
                        PricedLine(menuItemId: "cola", name: "Cola", quantity: 3, unitPriceCents: 250, lineTotalCents: 750)],
                totalCents: 3250, currency: "EUR", deliveryAddress: address)
            #expect(try await orders.getOrderStatus(GetOrderStatusRequest(orderId: placed.orderId)) == expected)

            // A later menu change (a new price, another name) does not touch the order.
            _ = try await platform.restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "margherita", name: "Margherita grande", priceCents: 1500)]))
            #expect(try await orders.getOrderStatus(GetOrderStatusRequest(orderId: placed.orderId)) == expected)
            // The kitchen sees the derived items and total on the stream's ORDER_PLACED.
            let event = try #require(try await platform.streamEvents().first { $0.orderID == placed.orderId })
            #expect(event.items == ["2 x Margherita (no basil)", "3 x Cola"] && event.totalPrice == 32.5)
        }
    }

    @Test func menusCarryMinorUnitsAndTheCurrency() async throws {
        try await withPlatform { platform in
            let restaurants = platform.restaurants
            try await setMenu(platform)
            var menu = try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"))
            #expect(menu.currency == "EUR")
            #expect(menu.items.map(\.priceCents) == [1250, 250, 600])
            #expect(menu.items.map(\.price) == [12.5, 2.5, 6])
            #expect(menu.items.map(\.unavailable) == [false, false, true])
            // A seed client's price stays as it gave it; its minor units are rounded.
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "cola", name: "Cola", price: 2.499)]))
            menu = try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"))
            #expect(menu.items[1].price == 2.499 && menu.items[1].priceCents == 250 && menu.currency == "EUR")
            // A currency without minor units.
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r2", items: [MenuItem(itemId: "ramen", name: "Ramen", price: 1200)],
                                                                   currency: "JPY"))
            let ramen = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", restaurantId: "r2",
                                                                               lines: [OrderLine(menuItemId: "ramen", quantity: 2)]))
            #expect(ramen.totalCents == 2400 && ramen.currency == "JPY")
            #expect(try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: ramen.orderId)).totalPrice == 2400)

            // A new currency needs every item of the menu, priced in it; then it is the menu's.
            let partial = await rpcError {
                try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "cola", name: "Cola", priceCents: 300)],
                                                                   currency: "GBP"))
            }
            #expect(partial?.code == .failedPrecondition)
            #expect(try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")).currency == "EUR")
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "margherita", name: "Margherita", priceCents: 1100), MenuItem(itemId: "cola", name: "Cola", priceCents: 220),
                MenuItem(itemId: "tiramisu", name: "Tiramisu", priceCents: 500, unavailable: true)], currency: "GBP"))
            #expect(try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")).currency == "GBP")
            for bad in [UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "x", name: "X", price: 1)], currency: "usd"),
                        UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "x", name: "X", price: 1, priceCents: 150)]),
                        UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "x", name: "X", priceCents: -1)]),
                        UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "x", name: "X", priceCents: Money.maxItemMinorUnits + 1)])] {
                #expect(await statusCode { try await restaurants.updateMenu(bad) } == .invalidArgument, "\(bad)")
            }
        }
    }

    @Test func itemsOffTheMenuAreFailedPreconditionNamingThem() async throws {
        try await withPlatform { platform in
            try await setMenu(platform)
            let orders = platform.orders
            func place(_ lines: [OrderLine], restaurant: String = "r1") async -> RPCError? {
                await rpcError { try await orders.placeOrder(PlaceOrderRequest(customerId: "c1", restaurantId: restaurant, lines: lines)) }
            }
            let unknown = await place([OrderLine(menuItemId: "cola", quantity: 1), OrderLine(menuItemId: "calzone", quantity: 1)])
            #expect(unknown?.code == .failedPrecondition && unknown?.message.contains("calzone") == true)
            let unavailable = await place([OrderLine(menuItemId: "tiramisu", quantity: 1)])
            #expect(unavailable?.code == .failedPrecondition && unavailable?.message.contains("tiramisu") == true)
            let noMenu = await place([OrderLine(menuItemId: "cola", quantity: 1)], restaurant: "r9")
            #expect(noMenu?.code == .failedPrecondition && noMenu?.message.contains("r9") == true)
            #expect(await place([OrderLine(menuItemId: "cola", quantity: 100)])?.code == .invalidArgument)
            // Nothing was stored for any of them.
            #expect(try await platform.streamEvents().isEmpty)
        }
    }

    @Test func retriesWithOneRequestIdPlaceOneOrder() async throws {
        try await withPlatform { platform in
            try await setMenu(platform)
            let orders = platform.orders
            let request = PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: [OrderLine(menuItemId: "margherita", quantity: 1)],
                                            requestId: "checkout-7f3a")
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<16 { group.addTask { try await orders.placeOrder(request).orderId } }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(ids.count == 1)
            let id = try #require(ids.first)
            #expect(try await platform.streamEvents().filter { $0.kind == .orderPlaced }.map(\.orderID) == [id])

            // Later retries get the order as it is now (ACCEPTED: no driver is assigned with the
            // delivery service down).
            await platform.stopDeliveryServices()
            _ = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id))
            let retry = try await orders.placeOrder(request)
            #expect(retry == PlaceOrderResponse(orderId: id, status: "ACCEPTED", totalCents: 1250, currency: "EUR"))
            // The same id for another request is refused; another customer's id is theirs.
            var other = request
            other.lines[0].quantity = 2
            #expect(await statusCode { try await orders.placeOrder(other) } == .invalidArgument)
            var otherCustomer = request
            otherCustomer.customerId = "c2"
            #expect(try await orders.placeOrder(otherCustomer).orderId != id)
            // Seed orders take request ids too.
            let seed = PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 4, requestId: "seed-1")
            #expect(try await orders.placeOrder(seed).orderId == (try await orders.placeOrder(seed).orderId))
        }
    }
}
