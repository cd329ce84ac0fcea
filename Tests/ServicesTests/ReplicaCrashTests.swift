// Replicas under a steady accept load, one of each service crashing midway: three delivery
// replicas and two order replicas on one Redis while orders are accepted ten at a time; one
// delivery replica and one order replica die abruptly (their Redis connections and servers go
// at once, as with kill -9) half-way through. The events the dead replicas had taken but not
// acknowledged are claimed by the others (XAUTOCLAIM) and nothing stays pending; every accepted
// order is then assigned exactly once, the consumers that are left store every order's latest
// stage, and it reads the same on the order replica that is left as on the platform's own.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct ReplicaCrashTests {
    @Test func everyOrderIsAssignedOnceAndReachesItsStageWhenAReplicaOfEachCrashes() async throws {
        try await withPlatform(drivers: ["d1", "d2", "d3"]) { platform in
            let doomedDelivery = try await platform.startDeliveryService()
            try await platform.startDeliveryService()
            let doomedOrder = try await platform.startOrderService()
            let survivingOrder = try await platform.startOrderService()
            let restaurants = platform.restaurants

            var ids: [String] = []
            for round in 0..<12 {
                var batch: [String] = []
                for _ in 0..<10 { batch.append(try await platform.placeOrder()) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in batch {
                        group.addTask { _ = try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "restaurant-1", orderId: id)) }
                    }
                    try await group.waitForAll()
                }
                ids += batch
                if round == 6 {
                    await doomedDelivery.crash()
                    await doomedOrder.crash()
                }
            }

            await eventually("\(ids.count) assignments", within: .seconds(20)) { try await platform.allAssignments().count >= ids.count }
            let assignments = try await platform.allAssignments()
            #expect(assignments.count == ids.count, "exactly one assignment per accepted order")
            #expect(assignments.map(\.orderId).sorted() == ids.sorted())

            for id in ids { _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "PICKED_UP")) }
            // The consumers that are left apply every stage: read the stored order, not through
            // GetOrderStatus (whose script would apply a pending stage itself).
            let redis = platform.redis
            for id in ids {
                await eventually("order \(id) stored as picked up") {
                    try await redis.send(["HGET", OrderKeys(id).order, "status"]).string == "PICKED_UP"
                }
            }
            let replicas = [platform.orders, platform.orders(of: survivingOrder)]
            for id in ids {
                for replica in replicas {
                    #expect(try await replica.getOrderStatus(GetOrderStatusRequest(orderId: id)).status == "PICKED_UP", "order \(id)")
                }
            }
            for group in ["delivery_service", "order_service"] {
                await eventually("nothing pending in \(group)", within: .seconds(20)) {
                    try await platform.pendingEvents(of: group) == 0
                }
            }
            await survivingOrder.stop()
            await doomedOrder.stop()  // ends what the crash left running in this process
        }
    }
}
