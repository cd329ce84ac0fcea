// OrderService over gRPC: placing (validation, `order_<n>` ids), reading, cancelling, and the
// restaurant's decision (PLACED -> ACCEPTED/REJECTED atomically, idempotent repeats, the
// restaurant an order names, NOT_FOUND and FAILED_PRECONDITION).
import PlatformProtos
import Testing

@Suite struct OrderServiceTests {
    @Test func placeOrderReturnsANewIdAndPlaced() async throws {
        try await withPlatform { platform in
            let first = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["pizza"], totalPrice: 10))
            let second = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["pizza"], totalPrice: 0))
            #expect(first == PlaceOrderResponse(orderId: "order_1", status: "PLACED"))
            #expect(second == PlaceOrderResponse(orderId: "order_2", status: "PLACED"))
        }
    }

    @Test func placeOrderValidatesCustomerItemsAndTotal() async throws {
        try await withPlatform { platform in
            let orders = platform.orders
            #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(items: ["pizza"], totalPrice: 1)) } == .invalidArgument)
            #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: [], totalPrice: 1)) } == .invalidArgument)
            for total in [Double.nan, .infinity, -.infinity, -1, -0.01] {
                #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: total)) } == .invalidArgument, "total \(total)")
            }
            // Nothing was stored by the refused calls: the next order is the first.
            let next = try await platform.placeOrder()
            #expect(next == "order_1")
        }
    }

    @Test func getOrderStatusReturnsStatusItemsAndTotal() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeOrder(items: ["pizza", "cola", "pizza", "crème brûlée"], total: 23.75)
            let order = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id))
            #expect(order == GetOrderStatusResponse(orderId: id, status: "PLACED", items: ["pizza", "cola", "pizza", "crème brûlée"], totalPrice: 23.75))
            #expect(await statusCode { try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: "order_999")) } == .notFound)
        }
    }

    /// Ids that look like the id counter's key name are unknown orders, not a storage error.
    @Test func idsThatNameInternalKeysAreUnknownOrders() async throws {
        try await withPlatform { platform in
            _ = try await platform.placeOrder()
            let orders = platform.orders
            for id in ["seq", "sequence", "items"] {
                #expect(await statusCode { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)) } == .notFound, "\(id)")
                #expect(await statusCode { try await orders.cancelOrder(CancelOrderRequest(orderId: id)) } == .notFound, "\(id)")
                #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r", decision: "ACCEPTED")) } == .notFound, "\(id)")
                #expect(await statusCode { try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d")) } == .notFound, "\(id)")
            }
        }
    }

    @Test func cancelAPlacedOrOnlyAcceptedOrderButNoFinalOne() async throws {
        try await withPlatform { platform in
            let placed = try await platform.placeOrder()
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: placed)) == CancelOrderResponse(orderId: placed, status: "CANCELED"))
            #expect(try await platform.orderStatus(placed) == "CANCELED")
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: placed)).status == "COULD_NOT_CANCEL")

            // Without authentication the caller is a customer, who may cancel an accepted order
            // until its food is ready (CancellationTests has every party's rules).
            let accepted = try await platform.placeAcceptedOrder()
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: accepted)).status == "CANCELED")
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: accepted)).status == "COULD_NOT_CANCEL")
            let rejected = try await platform.placeOrder()
            _ = try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r", orderId: rejected))
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: rejected)).status == "COULD_NOT_CANCEL")
            #expect(try await platform.orderStatus(rejected) == "REJECTED")

            #expect(await statusCode { try await platform.orders.cancelOrder(CancelOrderRequest(orderId: "order_999")) } == .notFound)
        }
    }

    @Test func decisionMovesPlacedOnceAndRepeatsIdempotently() async throws {
        try await withPlatform { platform in
            await platform.stopDeliveryServices()  // its assignments would add events to the stream
            let orders = platform.orders
            let id = try await platform.placeOrder()
            let accept = RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r1", decision: "ACCEPTED")
            #expect(try await orders.recordRestaurantDecision(accept) == RecordRestaurantDecisionResponse(orderId: id, status: "ACCEPTED"))
            let streamAfterFirst = try await platform.streamLength()
            #expect(try await orders.recordRestaurantDecision(accept).status == "ACCEPTED")
            #expect(try await platform.streamLength() == streamAfterFirst, "a repeated decision records no second event")
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r1", decision: "REJECTED")) } == .failedPrecondition)
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r2", decision: "ACCEPTED")) } == .failedPrecondition)
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: "order_999", restaurantId: "r1", decision: "ACCEPTED")) } == .notFound)
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r1", decision: "MAYBE")) } == .invalidArgument)

            let canceled = try await platform.placeOrder()
            _ = try await orders.cancelOrder(CancelOrderRequest(orderId: canceled))
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: canceled, restaurantId: "r1", decision: "ACCEPTED")) } == .failedPrecondition)
            #expect(try await platform.orderStatus(canceled) == "CANCELED")
        }
    }

    @Test func onlyTheNamedRestaurantDecides() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeOrder(restaurant: "pizzeria")
            #expect(await statusCode { try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "burger-bar", orderId: id)) } == .permissionDenied)
            #expect(await statusCode { try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "burger-bar", orderId: id)) } == .permissionDenied)
            #expect(try await platform.orderStatus(id) == "PLACED")
            #expect(try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "pizzeria", orderId: id)).status == "REJECTED")
        }
    }

    /// Accept and reject race on the same orders: exactly one decision wins each, one event each.
    @Test func concurrentDecisionsOnOneOrderHaveOneWinner() async throws {
        try await withPlatform { platform in
            await platform.stopDeliveryServices()  // its assignments would add events to the stream
            let orders = platform.orders
            var ids: [String] = []
            for _ in 0..<10 { ids.append(try await platform.placeOrder()) }
            let streamBefore = try await platform.streamLength()
            for id in ids {
                async let accept = statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "a", decision: "ACCEPTED")) }
                async let reject = statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "b", decision: "REJECTED")) }
                let outcomes = await [accept, reject]
                #expect(outcomes.filter { $0 == nil }.count == 1, "\(id): \(outcomes)")
                #expect(outcomes.filter { $0 == .failedPrecondition }.count == 1, "\(id): \(outcomes)")
                let status = try await platform.orderStatus(id)
                #expect(status == (outcomes[0] == nil ? "ACCEPTED" : "REJECTED"))
            }
            #expect(try await platform.streamLength() == streamBefore + 10)
        }
    }
}
