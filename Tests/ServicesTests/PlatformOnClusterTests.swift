// The services on a local Redis Cluster (REDIS_CLUSTER_NODES): 3 masters, each with replicas.
//
// The first test runs the whole journey (menus; place, accept, automatic assignment, every
// delivery stage; cancel and reject; a manual reassignment; the drivers' lists and the order's
// watch) and checks that the order partitions really are spread over the masters. The second
// kills -9 a master (the one serving the driver pool) while orders are being accepted, with
// REDIS_WAIT_REPLICAS=1: clients retry what answers UNAVAILABLE, as the README tells them to, and
// afterwards no acknowledged order is lost and every accepted order is assigned exactly once.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import RedisClient
import Synchronization
import Testing
import TestSupport

@Suite(.serialized) struct PlatformOnClusterTests {
    private func configuration(_ cluster: RedisCluster, waitReplicas: Int = 0) throws -> RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: 0,
                                               deployment: .cluster(seeds: try RedisEndpoint.list(parsing: cluster.seedList)),
                                               waitReplicas: waitReplicas, waitTimeout: .seconds(2))
        configuration.commandTimeout = .seconds(5)
        return configuration
    }

    @Test func theWholeJourneyRunsOnAClusterWithThePartitionsSpreadOverTheMasters() async throws {
        let cluster = try await RedisCluster.start(masters: 3, replicasPerMaster: 1)
        let masters = Set(try OrderPartition.all.map { try cluster.masterPort(forKey: $0.stream) })
        #expect(masters.count == 3, "the 8 partitions live on every master")
        try await withPlatform(drivers: ["d1", "d2", "d3"], redis: try configuration(cluster)) { platform in
            let restaurants = platform.restaurants
            let orders = platform.orders
            let deliveries = platform.deliveries
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "soup", name: "Soup", price: 4.5, description: "hot"),
            ]))
            #expect(try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1")).items.map(\.itemId) == ["soup"])

            var ids: [String] = []
            for _ in 0..<16 { ids.append(try await platform.placeAcceptedOrder(restaurant: "r1")) }
            #expect(Set(ids.map { OrderPartition(order: $0) }).count > 1)
            for id in ids { await eventually("\(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" } }
            let assignments = try await platform.allAssignments()
            #expect(assignments.map(\.orderId).sorted() == ids.sorted(), "one automatic assignment per order")

            // A manual reassignment, then every stage; each read reads its own write.
            let moved = ids[0]
            _ = try await deliveries.assignDriver(AssignDriverRequest(orderId: moved, driverId: "d9"))
            for id in ids {
                for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] {
                    _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage))
                    #expect(try await platform.orderStatus(id) == stage, "order \(id)")
                }
            }
            let d9 = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d9")).assignments
            #expect(d9.map(\.orderId) == [moved] && d9.map(\.status) == ["DELIVERED"])
            let everyone = try await platform.allAssignments()
            #expect(everyone.filter { $0.orderId == moved }.map(\.status) == ["REASSIGNED"])

            let canceled = try await platform.placeOrder(restaurant: "r1")
            #expect(try await orders.cancelOrder(CancelOrderRequest(orderId: canceled)).status == "CANCELED")
            let rejected = try await platform.placeOrder(restaurant: "r1")
            #expect(try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: rejected)).status == "REJECTED")
            #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: rejected, driverId: "d1")) }
                == .failedPrecondition)

            // A watch on the cluster: the snapshot, then each stage, ending with the order.
            let watched = try await platform.placeAcceptedOrder(restaurant: "r1")
            await eventually("\(watched) assigned") { try await platform.orderStatus(watched) == "ASSIGNED" }
            let updates = Mutex<[String]>([])
            let watch = Task {
                try await orders.watchOrder(WatchOrderRequest(orderId: watched)) { responses in
                    for try await update in responses { updates.withLock { $0.append(update.status) } }
                }
            }
            await eventually("the watch's snapshot") { updates.withLock { $0 } == ["ASSIGNED"] }
            for stage in ["PICKED_UP", "DELIVERED"] {
                _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: watched, status: stage))
            }
            try await watch.value
            #expect(updates.withLock { $0 } == ["ASSIGNED", "PICKED_UP", "DELIVERED"])
        }
    }

    @Test func aMasterKilledDuringAcceptsLosesNoAcknowledgedOrderAndAssignsEachOnce() async throws {
        let cluster = try await RedisCluster.start(masters: 3, replicasPerMaster: 2)
        try await withPlatform(drivers: ["d1", "d2", "d3"], redis: try configuration(cluster, waitReplicas: 1)) { platform in
            var ids: [String] = []
            for _ in 0..<40 { ids.append(try await platform.placeOrder(restaurant: "r1")) }
            let restaurants = platform.restaurants
            let accepted = Atomic<Int>(0)
            let accepting = Task { [ids] in
                for id in ids {
                    try await retryingWhileUnavailable {
                        _ = try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id))
                    }
                    accepted.add(1, ordering: .relaxed)
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            await eventually("a steady accept load", within: .seconds(20)) { accepted.load(ordering: .relaxed) >= 10 }
            let victim = try cluster.masterPort(forKey: "delivery:{drivers}:claims")
            cluster.kill(victim)
            try await cluster.waitForFailover(of: victim)
            try await accepting.value

            // Acknowledged before, during and after the failover: all there, each assigned once.
            let orders = platform.orders
            for id in ids {
                await eventually("\(id) assigned", within: .seconds(30)) {
                    try await retryingWhileUnavailable { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)).status } == "ASSIGNED"
                }
            }
            let assignments = try await retryingWhileUnavailable { try await platform.allAssignments() }
            #expect(assignments.map(\.orderId).sorted() == ids.sorted(), "exactly one assignment per accepted order")
        }
    }
}

/// Runs `body` until it answers anything but UNAVAILABLE (what a client does during a failover),
/// for up to 30 s.
private func retryingWhileUnavailable<T>(_ body: () async throws -> T) async throws -> T {
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
        do {
            return try await body()
        } catch let error as RPCError where error.code == .unavailable && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
