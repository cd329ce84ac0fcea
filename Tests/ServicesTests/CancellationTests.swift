// Who may cancel what, and what a cancel does, over gRPC with tokens (AUTH required): a customer
// while PLACED and, once accepted, until the kitchen has the food READY; a restaurant an accepted
// order before pickup; an operator anything not yet final; everything else COULD_NOT_CANCEL. A
// cancel is ORDER_CANCELED with who and why, which ends the order's assignment and frees its
// driver, and which the order's watchers see.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct CancellationTests {
    /// The parties of the tests' orders, and what each does.
    struct Parties {
        let platform: Platform
        let customer, restaurant, operatorToken: String

        init(_ platform: Platform) throws {
            let keys = try #require(platform.keys)
            self.platform = platform
            customer = keys.token("customer", "c1")
            restaurant = keys.token("restaurant", "r1")
            operatorToken = keys.token("operator", "ops")
        }

        func driver(_ id: String) throws -> String { try #require(platform.keys).token("driver", id) }

        /// A new order of c1 with r1, accepted, and its automatically assigned driver.
        func acceptedOrder() async throws -> (id: String, driver: String) {
            let id = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["soup"], totalPrice: 4, restaurantId: "r1"),
                                                          options: bearer(customer)).orderId
            _ = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id), options: bearer(restaurant))
            var driver = ""
            await eventually("\(id) is assigned") {
                driver = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id), options: bearer(operatorToken))
                    .status == "ASSIGNED" ? try await assignedDriver(id) : ""
                return !driver.isEmpty
            }
            return (id, driver)
        }

        func assignedDriver(_ id: String) async throws -> String {
            try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1"), options: bearer(operatorToken))
                .assignments.contains { $0.orderId == id && $0.status == "ASSIGNED" } ? "d1" : "d2"
        }

        func cancel(_ id: String, as token: String, reason: String = "") async throws -> String {
            try await platform.orders.cancelOrder(CancelOrderRequest(orderId: id, reason: reason), options: bearer(token)).status
        }

        func read(_ id: String) async throws -> GetOrderStatusResponse {
            try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id), options: bearer(operatorToken))
        }

        func markReady(_ id: String) async throws {
            _ = try await platform.restaurants.markOrderReady(MarkOrderReadyRequest(restaurantId: "r1", orderId: id), options: bearer(restaurant))
        }

        func update(_ id: String, _ stage: String, driver: String) async throws {
            _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage),
                                                                   options: bearer(try self.driver(driver)))
        }
    }

    @Test func aCustomerCancelsAnAcceptedOrderUntilItIsReady() async throws {
        try await withPlatform(drivers: ["d1", "d2"], auth: true) { platform in
            let parties = try Parties(platform)
            let (first, driver) = try await parties.acceptedOrder()
            #expect(driver == "d1")
            #expect(try await parties.cancel(first, as: parties.customer, reason: "ordered twice") == "CANCELED")
            let read = try await parties.read(first)
            #expect(read.status == "CANCELED" && read.canceledBy == "CUSTOMER" && read.cancelReason == "ordered twice")
            // The assignment ended and the driver is free: the next order goes to d1 again (the
            // least loaded, first in the pool), not to d2.
            await eventually("d1's assignment of \(first) is CANCELED") {
                try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1"), options: bearer(parties.operatorToken))
                    .assignments.contains { $0.orderId == first && $0.status == "CANCELED" }
            }
            let (second, next) = try await parties.acceptedOrder()
            #expect(next == "d1")
            // The driver can no longer move the canceled one.
            #expect(await statusCode { try await parties.update(first, "PICKED_UP", driver: "d1") } == .failedPrecondition)

            // Once the kitchen has it ready, the customer may not; the restaurant still may.
            try await parties.markReady(second)
            #expect(try await parties.cancel(second, as: parties.customer) == "COULD_NOT_CANCEL")
            #expect(try await parties.cancel(second, as: parties.restaurant, reason: "oven broke") == "CANCELED")
            #expect(try await parties.read(second).canceledBy == "RESTAURANT")
        }
    }

    @Test func afterPickupOnlyAnOperatorCancelsAndNothingFinalIsCanceled() async throws {
        try await withPlatform(drivers: ["d1"], auth: true) { platform in
            let parties = try Parties(platform)
            let (id, driver) = try await parties.acceptedOrder()
            try await parties.update(id, "PICKED_UP", driver: driver)
            // Read at once: the cancel sees the pickup it has not been told of by the consumer yet.
            #expect(try await parties.cancel(id, as: parties.restaurant) == "COULD_NOT_CANCEL")
            #expect(try await parties.cancel(id, as: parties.customer) == "COULD_NOT_CANCEL")
            #expect(try await parties.cancel(id, as: parties.operatorToken, reason: "address unreachable") == "CANCELED")
            #expect(try await parties.read(id).canceledBy == "OPERATOR")
            #expect(await statusCode { try await parties.update(id, "DELIVERED", driver: driver) } == .failedPrecondition)

            let (delivered, deliverer) = try await parties.acceptedOrder()
            for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] { try await parties.update(delivered, stage, driver: deliverer) }
            #expect(try await parties.cancel(delivered, as: parties.operatorToken) == "COULD_NOT_CANCEL")
            #expect(try await parties.read(delivered).status == "DELIVERED")

            // A restaurant rejects a PLACED order rather than cancel it.
            let placed = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"),
                                                              options: bearer(parties.customer)).orderId
            #expect(try await parties.cancel(placed, as: parties.restaurant) == "COULD_NOT_CANCEL")
            #expect(await statusCode { try await parties.cancel(placed, as: parties.customer, reason: String(repeating: "r", count: 501)) }
                == .invalidArgument)
            #expect(try await parties.cancel(placed, as: parties.customer) == "CANCELED")
        }
    }

    @Test func watchersSeeTheCancelAndTheStreamEnds() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await platform.placeAcceptedOrder()
            await eventually("\(id) is assigned") { try await platform.orderStatus(id) == "ASSIGNED" }
            let watcher = platform.watchOrder(id)
            let driverWatch = platform.watchDriver("d1")
            await watcher.waitFor(1)
            await driverWatch.waitFor(1)
            #expect(try await platform.orders.cancelOrder(CancelOrderRequest(orderId: id, reason: "changed my mind")).status == "CANCELED")
            await watcher.waitForEnd()
            let last = try #require(watcher.updates.last)
            #expect(last.status == "CANCELED" && last.final && last.cancelReason == "changed my mind" && last.driverId == "d1")
            #expect(watcher.updates.map(\.status) == ["ASSIGNED", "CANCELED"])
            await driverWatch.waitFor(2)
            #expect(driverWatch.updates.last?.orderId == id && driverWatch.updates.last?.status == "CANCELED")
        }
    }
}
