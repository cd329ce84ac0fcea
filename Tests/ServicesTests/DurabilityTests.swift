// Nothing lost, nothing doubled: the delivery service catching up after a restart, replaying the
// whole stream, claiming what a dead replica held, running as two replicas, starting while Redis is down; the order service catching
// up on stages it missed; state surviving an order service restart; ids unique
// across two order service instances; and Redis going away (UNAVAILABLE, never INTERNAL) and
// coming back.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import RPCCore
import Synchronization
import Testing

@Suite struct DurabilityTests {
    /// Every order has exactly one automatic assignment, and shows ASSIGNED.
    private func expectOneAssignmentEach(_ ids: [String], on platform: Platform) async throws {
        await eventually("\(ids.count) assignments") { try await platform.allAssignments().count >= ids.count }
        let assignments = try await platform.allAssignments()
        #expect(assignments.count == ids.count, "\(assignments)")
        #expect(assignments.map(\.orderId).sorted() == ids.sorted())
        for id in ids {
            await eventually("order \(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" }
        }
    }

    @Test func restartedDeliveryServiceAssignsWhatItMissed() async throws {
        try await withPlatform(drivers: ["d1", "d2"]) { platform in
            let before = try await platform.placeAcceptedOrder()
            await eventually("order \(before) assigned") { try await platform.orderStatus(before) == "ASSIGNED" }
            await platform.stopDeliveryServices()
            var missed: [String] = []
            for _ in 0..<5 { missed.append(try await platform.placeAcceptedOrder()) }
            for id in missed { #expect(try await platform.orderStatus(id) == "ACCEPTED", "nobody assigns while delivery is down") }
            try await platform.startDeliveryService()
            try await expectOneAssignmentEach([before] + missed, on: platform)
        }
    }

    @Test func replayingTheWholeStreamAssignsNothingTwice() async throws {
        try await withPlatform(drivers: ["d1", "d2", "d3"]) { platform in
            var ids: [String] = []
            for _ in 0..<6 { ids.append(try await platform.placeAcceptedOrder()) }
            try await expectOneAssignmentEach(ids, on: platform)
            await platform.stopDeliveryServices()
            // The group starts over: every event is delivered again.
            let redis = platform.redis
            for partition in OrderPartition.all {
                _ = try await redis.send(["XGROUP", "SETID", partition.stream, "delivery_service", "0"])
            }
            try await platform.startDeliveryService()
            // Wait until the new instance has been handed every stream again and applied it.
            await eventually("the streams replayed") {
                for partition in OrderPartition.all {
                    let end = try await redis.send(["XREVRANGE", partition.stream, "+", "-", "COUNT", "1"]).array?.first?.array?.first?.string
                    let groups = try await redis.send(["XINFO", "GROUPS", partition.stream]).array ?? []
                    let replayed = groups.contains { info in
                        let fields = (info.array ?? []).map(\.string)
                        return fields.starts(with: ["name", "delivery_service"]) && (end == nil || fields.contains(end))
                    }
                    if !replayed { return false }
                }
                return try await platform.pendingEvents(of: "delivery_service") == 0
            }
            try await expectOneAssignmentEach(ids, on: platform)
        }
    }

    /// A replica that took events and died before acknowledging them: after `claimIdle` a live
    /// replica claims them and applies them.
    @Test func eventsADeadReplicaHeldAreClaimedAndApplied() async throws {
        try await withPlatform(drivers: ["d1", "d2"]) { platform in
            await platform.stopDeliveryServices()
            var ids: [String] = []
            for _ in 0..<5 { ids.append(try await platform.placeAcceptedOrder()) }
            let redis = platform.redis
            var taken = 0
            for partition in OrderPartition.all {
                // (The stopped replica may not have got round to creating the group.)
                _ = try? await redis.send(["XGROUP", "CREATE", partition.stream, "delivery_service", "0", "MKSTREAM"])
                let reply = try await redis.send(["XREADGROUP", "GROUP", "delivery_service", "gone", "COUNT", "1000",
                                                  "STREAMS", partition.stream, ">"])
                taken += reply.array?.first?.array?.last?.array?.count ?? 0
            }
            let heldByGone = { () async throws -> Int in
                var held = 0
                for partition in OrderPartition.all {
                    held += try await redis.send(["XPENDING", partition.stream, "delivery_service", "-", "+", "1000", "gone"]).array?.count ?? 0
                }
                return held
            }
            try #require(try await heldByGone() == taken)
            try #require(taken >= 10, "the dead replica holds every order's events")
            try await platform.startDeliveryService()
            await eventually("the dead replica's events claimed", within: .seconds(15)) { try await heldByGone() == 0 }
            try await expectOneAssignmentEach(ids, on: platform)
            await eventually("nothing left pending") { try await platform.pendingEvents(of: "delivery_service") == 0 }
        }
    }

    /// An event no apply can take (here the apply refuses it, as a bug would) is set aside as a
    /// dead letter instead of stopping its partition; the events around it are applied.
    @Test func anEventThatCannotBeAppliedIsSetAsideAndTheRestApplied() async throws {
        try await withPlatform { platform in
            let redis = platform.redis
            let applied = Mutex<[String]>([])
            let consumer = EventConsumer(group: "poison_test", redis: redis, logger: quietLogger) { events, _ throws(RPCError) in
                if events.contains(where: { $0.orderID == "order_poison" }) { throw RPCError(.internal, "no script expects this") }
                applied.withLock { $0 += events.map(\.orderID) }
            }
            let partition = OrderPartition(order: "order_poison")
            let neighbour = (0..<1000).map { "order_n\($0)" }.filter { OrderPartition(order: $0) == partition }[0]
            var ids: [String] = []
            for order in ["order_poison", neighbour] {
                ids.append(try await redis.send(["XADD", partition.stream, "*", "event", "ORDER_PLACED:\(order)", "type", "ORDER_PLACED",
                                                 "order", order, "detail", ""]).string ?? "")
            }
            await consumer.start()
            await eventually("the poison set aside") {
                try await redis.send(["XLEN", partition.deadLetters]).int == 1
            }
            let letter = try await redis.send(["XRANGE", partition.deadLetters, "-", "+"]).array?.first?.array?.last?.array?.map(\.string) ?? []
            #expect(letter.starts(with: ["id", ids[0], "group", "poison_test", "event", "ORDER_PLACED:order_poison"]))
            await eventually("nothing pending") {
                try await redis.send(["XPENDING", partition.stream, "poison_test"]).array?.first?.int == 0
            }
            #expect(applied.withLock { $0 } == [neighbour])
            await consumer.stop()
        }
    }

    /// A store that fails everything (a broken build, a missing permission) sets nothing aside:
    /// the events stay pending and are applied once it works again.
    @Test func whenNoEventCanBeAppliedNothingIsSetAsideAndAllAreAppliedLater() async throws {
        try await withPlatform { platform in
            let redis = platform.redis
            let broken = Atomic<Bool>(true)
            let applied = Mutex<[String]>([])
            let consumer = EventConsumer(group: "broken_test", redis: redis, logger: quietLogger) { events, _ throws(RPCError) in
                if broken.load(ordering: .relaxed) { throw RPCError(.internal, "every call fails") }
                applied.withLock { $0 += events.map(\.orderID) }
            }
            let partition = OrderPartition(order: "order_a")
            let orders = ["order_a"] + (0..<1000).map { "order_b\($0)" }.filter { OrderPartition(order: $0) == partition }.prefix(2)
            for order in orders {
                _ = try await redis.send(["XADD", partition.stream, "*", "event", "ORDER_PLACED:\(order)", "type", "ORDER_PLACED",
                                          "order", order, "detail", ""])
            }
            await consumer.start()
            await eventually("the consumer holds the events") {
                try await redis.send(["XPENDING", partition.stream, "broken_test"]).array?.first?.int == Int64(orders.count)
            }
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await redis.send(["XLEN", partition.deadLetters]).int == 0, "nothing set aside")
            broken.store(false, ordering: .relaxed)
            await eventually("applied once the store works", within: .seconds(10)) { Set(applied.withLock { $0 }) == Set(orders) }
            await eventually("nothing pending") {
                try await redis.send(["XPENDING", partition.stream, "broken_test"]).array?.first?.int == 0
            }
            #expect(try await redis.send(["XLEN", partition.deadLetters]).int == 0)
            await consumer.stop()
        }
    }

    @Test func twoReplicasAssignEachOrderOnce() async throws {
        try await withPlatform(drivers: ["d1", "d2", "d3"]) { platform in
            try await platform.startDeliveryService()
            let restaurants = platform.restaurants
            var ids: [String] = []
            for _ in 0..<20 { ids.append(try await platform.placeOrder(restaurant: "r1")) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask { _ = try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)) }
                }
                try await group.waitForAll()
            }
            try await expectOneAssignmentEach(ids, on: platform)
            // Spread over the pool: with one event at a time, least loaded gives 7/7/6.
            for driver in platform.drivers {
                let count = try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver)).assignments.count
                #expect((6...7).contains(count), "\(driver): \(count)")
            }
        }
    }

    @Test func ordersSurviveAnOrderServiceRestart() async throws {
        try await withPlatform { platform in
            let placed = try await platform.placeOrder(items: ["soup", "bread"], total: 7.5)
            let delivered = try await platform.placeAcceptedOrder()
            _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: delivered, status: "DELIVERED"))
            try await platform.restartOrderService()
            #expect(try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: placed)) == GetOrderStatusResponse(orderId: placed, status: "PLACED", items: ["soup", "bread"], totalPrice: 7.5))
            #expect(try await platform.orderStatus(delivered) == "DELIVERED")
            #expect(try await platform.placeOrder() == "order_3")
            // Replaying every delivery event from the start does not move a delivered order back.
            for partition in OrderPartition.all {
                _ = try await platform.redis.send(["XGROUP", "SETID", partition.stream, "order_service", "0"])
            }
            try await platform.restartOrderService()
            #expect(try await platform.orderStatus(delivered) == "DELIVERED")
        }
    }

    @Test func orderServiceCatchesUpOnDeliveryStagesItMissed() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeAcceptedOrder()
            _ = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d1"))
            await platform.stopOrderService()
            _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "OUT_FOR_DELIVERY"))
            try await platform.restartOrderService()
            await eventually("order \(id) out for delivery") {
                try await platform.redis.send(["HGET", OrderKeys(id).order, "status"]).string == "OUT_FOR_DELIVERY"
            }
            #expect(try await platform.orderStatus(id) == "OUT_FOR_DELIVERY")
        }
    }

    /// A delivery instance that starts while Redis is down subscribes once it is back and
    /// catches up on what was accepted before (the snapshot keeps the stream across the restart).
    @Test func deliveryStartedWhileRedisIsDownCatchesUpWhenItReturns() async throws {
        try await withPlatform { platform in
            await platform.stopDeliveryServices()
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await platform.placeAcceptedOrder()) }
            _ = try await platform.redis.send(["SAVE"])
            platform.redisServer.kill()
            try await platform.startDeliveryService()
            #expect(await statusCode { try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "driver_auto")) } == .unavailable)
            try await platform.redisServer.relaunch()
            try await expectOneAssignmentEach(ids, on: platform)
        }
    }

    @Test func twoOrderServiceInstancesNeverShareAnId() async throws {
        try await withPlatform { platform in
            let second = try await platform.startOrderService()
            let clients = [platform.orders, platform.orders(of: second)]
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<60 {
                    let client = clients[index % 2]
                    group.addTask { try await client.placeOrder(PlaceOrderRequest(customerId: "c\(index)", items: ["x"], totalPrice: 1)).orderId }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(Set(ids).count == 60)
            #expect(Set(ids) == Set((1...60).map { "order_\($0)" }))
            await second.stop()
        }
    }

    @Test func redisDownIsUnavailableUntilItComesBack() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeAcceptedOrder()
            _ = try await platform.restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "i", name: "I", price: 1)]))
            let (orders, restaurants, deliveries) = (platform.orders, platform.restaurants, platform.deliveries)
            platform.redisServer.kill()
            #expect(await statusCode { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: 1)) } == .unavailable)
            #expect(await statusCode { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)) } == .unavailable)
            #expect(await statusCode { try await orders.cancelOrder(CancelOrderRequest(orderId: id)) } == .unavailable)
            #expect(await statusCode { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: id, restaurantId: "r1", decision: "ACCEPTED")) } == .unavailable)
            #expect(await statusCode { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "i", name: "I", price: 1)])) } == .unavailable)
            #expect(await statusCode { try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")) } == .unavailable)
            #expect(await statusCode { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id)) } == .unavailable)
            #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d1")) } == .unavailable)
            #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "PICKED_UP")) } == .unavailable)
            #expect(await statusCode { try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1")) } == .unavailable)

            try await platform.redisServer.relaunch()  // empty: the fixture persists nothing
            await eventually("order service back") { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: 1)).status == "PLACED" }
            await eventually("restaurant service back") { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "i", name: "I", price: 1)])).status == "SUCCESS" }
            await eventually("delivery service back") { try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1")).assignments.isEmpty }
            // And the whole flow works again, automatic assignment included.
            let again = try await platform.placeAcceptedOrder()
            await eventually("order \(again) assigned") { try await platform.orderStatus(again) == "ASSIGNED" }
        }
    }
}
