// The restaurant's side of an order over gRPC: pausing (menu orders refused until the pause ends
// by itself or the restaurant opens again), accepting with the kitchen's minutes (the estimated
// ready time on the order, its event and its watchers) and rejecting with a reason.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct KitchenTests {
    private let line = [OrderLine(menuItemId: "soup", quantity: 1)]

    private func setMenu(_ platform: Platform) async throws {
        _ = try await platform.restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
            MenuItem(itemId: "soup", name: "Soup", priceCents: 450)]))
    }

    @Test func aPausedRestaurantTakesNoMenuOrdersUntilThePauseEnds() async throws {
        try await withPlatform { platform in
            try await setMenu(platform)
            let restaurants = platform.restaurants, orders = platform.orders
            let order = PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: line)
            // Until opened again.
            _ = try await restaurants.setRestaurantStatus(SetRestaurantStatusRequest(restaurantId: "r1", status: .paused))
            let refused = await rpcError { try await orders.placeOrder(order) }
            #expect(refused?.code == .failedPrecondition && refused?.message.contains("paused") == true)
            _ = try await restaurants.setRestaurantStatus(SetRestaurantStatusRequest(restaurantId: "r1", status: .open))
            #expect(try await orders.placeOrder(order).status == "PLACED")

            // Until a time; the pause ends by itself. (A minute, long enough for a loaded machine to
            // check it holds; then a second, to see it end.)
            let until = unixMilliseconds() + 60_000
            let paused = try await restaurants.setRestaurantStatus(SetRestaurantStatusRequest(restaurantId: "r1", status: .paused,
                                                                                              pausedUntilUnixMs: until))
            #expect(paused == SetRestaurantStatusResponse(restaurantId: "r1", status: .paused, pausedUntilUnixMs: until))
            let menu = try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"))
            #expect(menu.status == .paused && menu.pausedUntilUnixMs == until)
            #expect(await statusCode { try await orders.placeOrder(order) } == .failedPrecondition)
            _ = try await restaurants.setRestaurantStatus(SetRestaurantStatusRequest(restaurantId: "r1", status: .paused,
                                                                                     pausedUntilUnixMs: unixMilliseconds() + 1000))
            await eventually("the pause ended", within: .seconds(15)) { try await orders.placeOrder(order).status == "PLACED" }
            #expect(try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")).status == .open)

            for bad in [SetRestaurantStatusRequest(restaurantId: "r1", status: .open, pausedUntilUnixMs: until + 60_000),
                        SetRestaurantStatusRequest(restaurantId: "r1", status: .paused, pausedUntilUnixMs: unixMilliseconds() - 1000),
                        SetRestaurantStatusRequest(restaurantId: "r1", status: .paused, pausedUntilUnixMs: unixMilliseconds() + 400 * 86_400_000),
                        SetRestaurantStatusRequest(restaurantId: "r1"),
                        SetRestaurantStatusRequest(restaurantId: "", status: .open)] {
                #expect(await statusCode { try await restaurants.setRestaurantStatus(bad) } == .invalidArgument, "\(bad)")
            }
        }
    }

    @Test func acceptingWithPrepMinutesGivesTheOrderItsReadyTime() async throws {
        try await withPlatform { platform in
            await platform.stopDeliveryServices()
            let id = try await platform.placeOrder(restaurant: "r1")
            let watcher = platform.watchOrder(id)
            await watcher.waitFor(1)
            let before = unixMilliseconds()
            let accept = AcceptOrderRequest(restaurantId: "r1", orderId: id, prepMinutes: 20)
            let accepted = try await platform.restaurants.acceptOrder(accept)
            let readyAt = accepted.estimatedReadyAtUnixMs
            #expect(accepted.status == "ACCEPTED")
            // Redis's clock and ours: the same machine.
            #expect(abs(readyAt - (before + 20 * 60_000)) < 5_000, "\(readyAt) against \(before)")
            #expect(try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id)).estimatedReadyAtUnixMs == readyAt)
            // The same decision again answers the same estimate.
            #expect(try await platform.restaurants.acceptOrder(accept).estimatedReadyAtUnixMs == readyAt)
            await watcher.waitFor(2)
            #expect(watcher.updates.map(\.estimatedReadyAtUnixMs) == [0, readyAt])
            // A new watch starts from it.
            let later = platform.watchOrder(id)
            await later.waitFor(1)
            #expect(later.updates.first?.estimatedReadyAtUnixMs == readyAt)

            let other = try await platform.placeOrder(restaurant: "r1")
            for minutes: Int32 in [-1, maxPrepMinutes + 1] {
                #expect(await statusCode {
                    try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: other, prepMinutes: minutes))
                } == .invalidArgument)
            }
            #expect(try await platform.orderStatus(other) == "PLACED")
        }
    }

    @Test func rejectingKeepsTheReasonOnTheOrderAndItsEvent() async throws {
        try await withPlatform { platform in
            let restaurants = platform.restaurants
            let busy = try await platform.placeOrder(restaurant: "r1")
            _ = try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: busy, reason: .tooBusy, message: "kitchen full"))
            let read = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: busy))
            #expect(read.status == "REJECTED" && read.rejectReason == "TOO_BUSY" && read.rejectMessage == "kitchen full")
            let event = try #require(try await platform.streamEvents().first { $0.orderID == busy && $0.kind == .orderRejected })
            #expect(event.rejectionReason == .tooBusy)
            // The seed's RejectOrder, without a reason, is recorded as OTHER.
            let plain = try await platform.placeOrder(restaurant: "r1")
            #expect(try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: plain)).status == "REJECTED")
            #expect(try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: plain)).rejectReason == "OTHER")

            let third = try await platform.placeOrder(restaurant: "r1")
            for bad in [RejectOrderRequest(restaurantId: "r1", orderId: third, reason: RejectReason(rawValue: 9)),
                        RejectOrderRequest(restaurantId: "r1", orderId: third, reason: .closed, message: String(repeating: "m", count: 501))] {
                #expect(await statusCode { try await restaurants.rejectOrder(bad) } == .invalidArgument, "\(bad)")
            }
            // The order service checks the details itself too (a caller of the internal RPC).
            #expect(await statusCode {
                try await platform.orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(
                    orderId: third, restaurantId: "r1", decision: "ACCEPTED", rejectReason: "TOO_BUSY"))
            } == .invalidArgument)
            #expect(try await platform.orderStatus(third) == "PLACED")
        }
    }
}

@Suite struct KitchenStageTests {
    @Test func markOrderReadyShowsTheKitchensStageBesideTheDeliverys() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let restaurants = platform.restaurants
            let id = try await platform.placeOrder(restaurant: "r1")
            let mark = MarkOrderReadyRequest(restaurantId: "r1", orderId: id)
            #expect(await statusCode { try await restaurants.markOrderReady(mark) } == .failedPrecondition)
            let kitchen = platform.watchRestaurant("r1")
            _ = try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id))
            await eventually("\(id) is assigned") { try await platform.orderStatus(id) == "ASSIGNED" }
            var read = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id))
            #expect(read.kitchenStatus == "PREPARING" && read.deliveryStatus == "ASSIGNED")
            let watcher = platform.watchOrder(id)
            await watcher.waitFor(1)

            #expect(try await restaurants.markOrderReady(mark) == MarkOrderReadyResponse(orderId: id, status: "ASSIGNED", kitchenStatus: "READY"))
            #expect(try await restaurants.markOrderReady(mark).kitchenStatus == "READY", "marking again is idempotent")
            #expect(await statusCode { try await restaurants.markOrderReady(MarkOrderReadyRequest(restaurantId: "r2", orderId: id)) } == .permissionDenied)
            #expect(await statusCode { try await restaurants.markOrderReady(MarkOrderReadyRequest(restaurantId: "r1", orderId: "order_999")) } == .notFound)
            read = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id))
            #expect(read.status == "ASSIGNED" && read.kitchenStatus == "READY")

            try await platform.updateDelivery(id, "PICKED_UP")
            read = try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id))
            #expect(read.status == "PICKED_UP" && read.kitchenStatus == "READY" && read.deliveryStatus == "PICKED_UP")
            await watcher.waitFor(3)
            #expect(watcher.updates.map { "\($0.status)/\($0.kitchenStatus)/\($0.deliveryStatus)" }
                == ["ASSIGNED/PREPARING/ASSIGNED", "ASSIGNED/READY/ASSIGNED", "PICKED_UP/READY/PICKED_UP"])
            // The kitchen screen saw the ready food.
            await eventually("the kitchen screen shows \(id) READY") {
                kitchen.updates.contains { $0.orderId == id && $0.kitchenStatus == "READY" && $0.status == "ASSIGNED" }
            }

            let other = try await platform.placeAcceptedOrder(restaurant: "r1")
            try await platform.updateDelivery(other, "PICKED_UP")
            #expect(await statusCode { try await restaurants.markOrderReady(MarkOrderReadyRequest(restaurantId: "r1", orderId: other)) }
                == .failedPrecondition, "picked up: the kitchen does not have it any more")
        }
    }
}
