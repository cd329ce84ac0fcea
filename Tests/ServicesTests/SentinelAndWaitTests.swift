// The services on a Sentinel-watched master (the REDIS_SENTINELS deployment) with two replicas
// and WAIT for one of them (REDIS_WAIT_REPLICAS=1). Kill -9 the master: once the sentinels have
// promoted a replica (the other follows it, so WAIT can succeed again), the services serve again
// without a restart (place, accept, automatic assignment, reads), and every change acknowledged
// before the crash is still there, assigned once. And on a lone server, where no replica can
// acknowledge, WAIT makes every change answer UNAVAILABLE while reads keep working.
@testable import OrderLogic
import PlatformProtos
import RedisClient
import Testing
import TestSupport

@Suite(.serialized) struct SentinelAndWaitTests {
    @Test func theServicesFollowAFailoverAndKeepWhatWasAcknowledged() async throws {
        let sentinels = try await RedisSentinelGroup.start(replicas: 2, sentinels: 3)
        var configuration = RedisConfiguration(host: "127.0.0.1", port: 0,
                                               deployment: .sentinel(sentinels: try RedisEndpoint.list(parsing: sentinels.sentinelList),
                                                                     masterName: sentinels.masterName),
                                               waitReplicas: 1, waitTimeout: .seconds(3))
        configuration.commandTimeout = .seconds(5)
        try await withPlatform(drivers: ["d1", "d2"], redis: configuration) { platform in
            var before: [String] = []
            for _ in 0..<5 { before.append(try await platform.placeAcceptedOrder()) }
            for id in before { await eventually("\(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" } }

            let old = try sentinels.killMaster()
            let promoted = try await sentinels.waitForNewMaster(replacing: old)
            #expect(promoted != old)

            // Calls fail with UNAVAILABLE until the services have found the new master.
            let orders = platform.orders
            await eventually("placing works again", within: .seconds(30)) {
                try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["tea"], totalPrice: 1)).status == "PLACED"
            }
            let after = try await platform.placeAcceptedOrder()
            await eventually("\(after) assigned after the failover", within: .seconds(30)) {
                try await platform.orderStatus(after) == "ASSIGNED"
            }
            // Acknowledged with WAIT 1 before the crash: on the promoted replica.
            for id in before { #expect(try await platform.orderStatus(id) == "ASSIGNED", "order \(id)") }
            let assignments = try await platform.allAssignments()
            #expect(Set(before + [after]).isSubset(of: Set(assignments.map(\.orderId))))
            #expect(assignments.count == Set(assignments.map(\.orderId)).count, "one assignment per order: \(assignments)")
        }
    }

    /// WAIT is on every change, and only there: on a lone server (no replica can acknowledge)
    /// with REDIS_WAIT_REPLICAS=1, a change answers UNAVAILABLE saying so, although the master
    /// made it, while reads keep working (they answer, here NOT_FOUND).
    @Test func withNoReplicaToAcknowledgeChangesAreUnavailableAndReadsWork() async throws {
        try await withPlatform(waitReplicas: 1) { platform in
            let orders = platform.orders
            let before = try await platform.streamLength()
            let failure = await outcome { try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["tea"], totalPrice: 1)) }
            #expect(failure.code == .unavailable)
            #expect(failure.message.contains("replicas acknowledged"), "\(failure.message)")
            // The first change of PlaceOrder, numbering the order, was made and not acknowledged:
            // nothing after it ran.
            #expect(try await platform.redis.send(["GET", OrderKeys.sequence]).string == "1", "the master made the change")
            #expect(try await platform.streamLength() == before)
            #expect(await statusCode { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: "order_1")) } == .notFound)
            #expect(await statusCode { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: "order_404")) } == .notFound)
        }
    }
}
