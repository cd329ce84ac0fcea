// RestaurantService over gRPC: menus (upsert by item_id, validation, NOT_FOUND) and decisions
// through the order service: the exact event published on `order_events` and appended to the
// stream, refusals for canceled and unknown orders, and UNAVAILABLE with nothing published when
// the order service is down.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct RestaurantServiceTests {
    @Test func updateMenuUpsertsByItemId() async throws {
        try await withPlatform { platform in
            let restaurants = platform.restaurants
            let first = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "pizza", name: "Pizza", price: 9.5, description: "margherita"),
                MenuItem(itemId: "cola", name: "Cola", price: 2),
            ]))
            #expect(first.status == "SUCCESS")
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "pizza", name: "Pizza grande", price: 12, description: "bigger"),
                MenuItem(itemId: "tiramisu", name: "Tiramisù", price: 0, description: ""),
                MenuItem(itemId: "tiramisu", name: "Tiramisù", price: 4.25, description: "twice in one update"),
            ]))
            let menu = try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"))
            #expect(menu == GetMenuResponse(restaurantId: "r1", items: [
                MenuItem(itemId: "pizza", name: "Pizza grande", price: 12, description: "bigger", priceCents: 1200),
                MenuItem(itemId: "cola", name: "Cola", price: 2, priceCents: 200),
                MenuItem(itemId: "tiramisu", name: "Tiramisù", price: 4.25, description: "twice in one update", priceCents: 425),
            ], currency: "USD", status: .open))
            // Menus are per restaurant.
            #expect(await statusCode { try await restaurants.getMenu(GetMenuRequest(restaurantId: "r2")) } == .notFound)
        }
    }

    @Test func updateMenuValidatesNamesAndPrices() async throws {
        try await withPlatform { platform in
            let restaurants = platform.restaurants
            let bad: [MenuItem] = [
                MenuItem(itemId: "x", name: "", price: 1),
                MenuItem(itemId: "x", name: "X", price: .nan),
                MenuItem(itemId: "x", name: "X", price: .infinity),
                MenuItem(itemId: "x", name: "X", price: -1),
            ]
            for item in bad {
                let good = MenuItem(itemId: "good", name: "Good", price: 1)
                #expect(await statusCode { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [good, item])) } == .invalidArgument, "\(item)")
            }
            #expect(await statusCode { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [])) } == .invalidArgument)
            // A refused update stores nothing, not even its valid items.
            #expect(await statusCode { try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")) } == .notFound)
        }
    }

    @Test func acceptPublishesExactlyOrderAccepted() async throws {
        try await withPlatform { platform in
            await platform.stopDeliveryServices()  // keep DRIVER_ASSIGNED out of the channel
            let recorder = try await EventRecorder(platform)
            let id = try await platform.placeOrder()
            let streamBefore = try await platform.streamLength()
            #expect(try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)) == AcceptOrderResponse(orderId: id, status: "ACCEPTED"))
            #expect(try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)).status == "ACCEPTED")
            #expect(try await recorder.publishedSoFar() == ["ORDER_ACCEPTED:\(id)"])
            #expect(try await platform.streamLength() == streamBefore + 1)
            let last = try await platform.redis.send(["XREVRANGE", OrderPartition(order: id).stream, "+", "-", "COUNT", "1"])
            // The seed's text first, then the typed fields watchers route by.
            #expect(last.array?.first?.array?.last?.array?.compactMap(\.string)
                == ["event", "ORDER_ACCEPTED:\(id)", "type", "ORDER_ACCEPTED", "order", id, "detail", "",
                    "customer", "customer-1", "restaurant", "r1"])
            #expect(try await platform.orderStatus(id) == "ACCEPTED")
            await recorder.close()
        }
    }

    @Test func rejectPublishesExactlyOrderRejected() async throws {
        try await withPlatform { platform in
            let recorder = try await EventRecorder(platform)
            let id = try await platform.placeOrder()
            #expect(try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: id)) == RejectOrderResponse(orderId: id, status: "REJECTED"))
            #expect(try await recorder.publishedSoFar() == ["ORDER_REJECTED:\(id)"])
            #expect(try await platform.orderStatus(id) == "REJECTED")
            #expect(try await platform.allAssignments().isEmpty)
            await recorder.close()
        }
    }

    @Test func canceledOrUnknownOrdersCannotBeAccepted() async throws {
        try await withPlatform { platform in
            let recorder = try await EventRecorder(platform)
            let id = try await platform.placeOrder()
            _ = try await platform.orders.cancelOrder(CancelOrderRequest(orderId: id))
            let streamBefore = try await platform.streamLength()
            #expect(await statusCode { try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)) } == .failedPrecondition)
            #expect(await statusCode { try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: id)) } == .failedPrecondition)
            #expect(await statusCode { try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: "order_999")) } == .notFound)
            #expect(try await recorder.publishedSoFar() == ["ORDER_CANCELED:\(id)"])
            #expect(try await platform.streamLength() == streamBefore)
            #expect(try await platform.orderStatus(id) == "CANCELED")
            await recorder.close()
        }
    }

    @Test func orderServiceDownIsUnavailableAndPublishesNothing() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeOrder()
            let recorder = try await EventRecorder(platform)
            let streamBefore = try await platform.streamLength()
            await platform.stopOrderService()
            #expect(await statusCode { try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)) } == .unavailable)
            #expect(await statusCode { try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: id)) } == .unavailable)
            #expect(try await recorder.publishedSoFar() == [])
            #expect(try await platform.streamLength() == streamBefore)
            #expect(try await platform.redis.send(["HGET", OrderKeys(id).order, "status"]).string == "PLACED")
            await recorder.close()
        }
    }
}
