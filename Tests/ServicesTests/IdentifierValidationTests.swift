// Every id a client gives, on every method of the three services: 1 to 128 letters, digits, `.`,
// `_` and `-`; anything else (empty, 129 characters, spaces, non-ASCII, `/`, `:`) is INVALID_ARGUMENT.
import PlatformProtos
import Testing

@Suite struct IdentifierValidationTests {
    @Test func orderServiceRefusesInvalidIds() async throws {
        try await withPlatform { platform in
            let orders = platform.orders
            for id in invalidIdentifiers {
                #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(customerId: id, items: ["x"], totalPrice: 1)) } == .invalidArgument, "customer_id \(id)")
                if !id.isEmpty {  // restaurant_id is optional: empty means any restaurant
                    #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: 1, restaurantId: id)) } == .invalidArgument, "restaurant_id \(id)")
                }
                #expect(await statusCode { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await orders.cancelOrder(CancelOrderRequest(orderId: id)) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r", decision: "ACCEPTED")) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: "order_1", restaurantId: id, decision: "ACCEPTED")) } == .invalidArgument, "restaurant_id \(id)")
            }
        }
    }

    @Test func restaurantServiceRefusesInvalidIds() async throws {
        try await withPlatform { platform in
            let restaurants = platform.restaurants
            let orderID = try await platform.placeOrder()
            for id in invalidIdentifiers {
                #expect(await statusCode { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: id, items: [MenuItem(itemId: "i", name: "n", price: 1)])) } == .invalidArgument, "restaurant_id \(id)")
                #expect(await statusCode { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r", items: [MenuItem(itemId: id, name: "n", price: 1)])) } == .invalidArgument, "item_id \(id)")
                #expect(await statusCode { try await restaurants.getMenu(GetMenuRequest(restaurantId: id)) } == .invalidArgument, "restaurant_id \(id)")
                #expect(await statusCode { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: id, orderId: orderID)) } == .invalidArgument, "restaurant_id \(id)")
                #expect(await statusCode { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r", orderId: id)) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: id, orderId: orderID)) } == .invalidArgument, "restaurant_id \(id)")
                #expect(await statusCode { try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r", orderId: id)) } == .invalidArgument, "order_id \(id)")
            }
            #expect(try await platform.orderStatus(orderID) == "PLACED")
        }
    }

    @Test func deliveryServiceRefusesInvalidIds() async throws {
        try await withPlatform { platform in
            let deliveries = platform.deliveries
            let orderID = try await platform.placeAcceptedOrder()
            for id in invalidIdentifiers {
                #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d")) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: orderID, driverId: id)) } == .invalidArgument, "driver_id \(id)")
                #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "PICKED_UP")) } == .invalidArgument, "order_id \(id)")
                #expect(await statusCode { try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: id)) } == .invalidArgument, "driver_id \(id)")
            }
        }
    }

    @Test func longestAndFullAlphabetIdsAreAccepted() async throws {
        try await withPlatform { platform in
            let longest = String(repeating: "x", count: 128)
            let alphabet = "AZaz09._-"
            let id = try await platform.placeOrder(customer: longest, restaurant: alphabet)
            let accepted = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: alphabet, orderId: id))
            #expect(accepted.status == "ACCEPTED")
            _ = try await platform.restaurants.updateMenu(UpdateMenuRequest(restaurantId: longest, items: [MenuItem(itemId: alphabet, name: "n", price: 1)]))
            #expect(try await platform.restaurants.getMenu(GetMenuRequest(restaurantId: longest)).items.map(\.itemId) == [alphabet])
            let assignment = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: longest))
            #expect(assignment.status == "ASSIGNED")
        }
    }
}
