// Events applied out of order by several replicas never move an order backwards.
//
// The order service's projection keeps the id of the last event it applied to each order
// (`last_event`) and skips any event at or before it. The first test replays the interleaving
// that once left orders stuck at PICKED_UP: replica B applies [E1, E2] while the lagging replica
// A still holds [E1] and applies it afterwards. The second runs three replicas over many orders,
// each reading the stream from its own position in its own batch sizes, interleaved at random,
// with replays of earlier stretches, and checks that every order ends at the status its newest
// event gives. Both start from the state before any stage was applied (the orders' hashes are
// put back to it), and both apply through `RedisOrderStore.applyDeliveryEvents`, the code the consumers run.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import RedisClient
import RPCCore
import Testing

@Suite struct EventOrderingTests {
    /// Puts the order back to ASSIGNED as of its assignment event: no delivery stage applied yet.
    private func rewind(_ order: String, to assignment: PlatformEvent, _ redis: RedisClient) async throws {
        _ = try await redis.send(["HSET", OrderKeys(order).order, "status", OrderStatus.assigned.rawValue,
                                  "last_event", assignment.id!.description, "delivery_event", assignment.id!.description,
                                  "delivery_status", DeliveryStatus.assigned.rawValue])
    }

    /// Places and accepts an order per journey, waits for their drivers, then reports each
    /// journey's stages on its order.
    private func delivered(_ journeys: [[DeliveryStatus]], on platform: Platform) async throws -> [String] {
        var ids: [String] = []
        for _ in journeys { ids.append(try await platform.placeAcceptedOrder()) }
        for id in ids { await eventually("\(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" } }
        // Stage by stage across the orders, so each order's events are spread over the stream.
        for step in 0..<(journeys.map(\.count).max() ?? 0) {
            for (id, journey) in zip(ids, journeys) where step < journey.count {
                _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: journey[step].rawValue))
            }
        }
        return ids
    }

    @Test func aLaggingReplicaApplyingAnOlderEventChangesNothing() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await delivered([[.pickedUp, .outForDelivery]], on: platform)[0]
            await eventually("\(id) out for delivery") { try await platform.orderStatus(id) == "OUT_FOR_DELIVERY" }
            let events = try await platform.streamEvents().filter { $0.orderID == id }
            let stages = events.filter { $0.kind == .deliveryStatus }
            let assignments = events.filter { $0.kind == .driverAssigned }
            let details = stages.map { $0.detail ?? "" }
            try #require(details == ["PICKED_UP", "OUT_FOR_DELIVERY"] && assignments.count == 1)
            let (e1, e2) = (stages[0], stages[1])

            try await rewind(id, to: assignments[0], platform.redis)
            try await RedisOrderStore(redis: platform.redis).applyDeliveryEvents([e1, e2])  // replica B
            try await RedisOrderStore(redis: platform.redis).applyDeliveryEvents([e1])      // replica A, late
            #expect(try await platform.orderStatus(id) == "OUT_FOR_DELIVERY")
            // And the newest event alone, before the older ones: the stage and the driver are there.
            try await rewind(id, to: assignments[0], platform.redis)
            _ = try await platform.redis.send(["HDEL", OrderKeys(id).order, "driver_id"])
            try await RedisOrderStore(redis: platform.redis).applyDeliveryEvents([e2, e1, assignments[0]])
            #expect(try await platform.orderStatus(id) == "OUT_FOR_DELIVERY")
            #expect(try await platform.redis.send(["HGET", OrderKeys(id).order, "driver_id"]).string == "d1")
            let last = try await platform.redis.send(["HGET", OrderKeys(id).order, "last_event"]).string
            let newest = e2.id?.description
            #expect(last == newest)
        }
    }

    /// One replica's reading of `stages`: batches of 1 to 8 in stream order from a random start
    /// in the first quarter, with now and then a replay of an earlier stretch (a restarted or
    /// lagging replica re-reading what others applied long ago).
    private static func replicaBatches(_ stages: [PlatformEvent]) -> [[PlatformEvent]] {
        var batches: [[PlatformEvent]] = []
        var position = Int.random(in: 0..<max(1, stages.count / 4))
        while position < stages.count {
            let size = Int.random(in: 1...8)
            batches.append(Array(stages[position..<min(stages.count, position + size)]))
            if Bool.random(), position > 1 {
                let back = Int.random(in: 0..<position - 1)
                batches.append(Array(stages[back..<Int.random(in: back + 1..<position)]))
            }
            position += size
        }
        return batches
    }

    /// Three replicas at once, each reading `stages` its own way, and one more that applies them
    /// all from the start, so every event is applied at least once.
    private static func applyAsReplicas(_ stages: [PlatformEvent], redis: RedisClient) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                let batches = replicaBatches(stages)
                group.addTask {
                    for batch in batches {
                        try await RedisOrderStore(redis: redis).applyDeliveryEvents(batch)
                        if Bool.random() { await Task.yield() }
                    }
                }
            }
            group.addTask { try await RedisOrderStore(redis: redis).applyDeliveryEvents(stages) }
            try await group.waitForAll()
        }
    }

    @Test func replicasApplyingInAnyInterleavingAgreeWithTheNewestEvent() async throws {
        try await withPlatform(drivers: ["d1", "d2", "d3"]) { platform in
            let journeys: [[DeliveryStatus]] = [
                [.pickedUp], [.pickedUp, .outForDelivery], [.pickedUp, .outForDelivery, .delivered],
                [.pickedUp, .failed], [.outForDelivery, .delivered], [.pickedUp, .outForDelivery, .failed],
            ]
            let plan = (0..<30).map { _ in journeys.randomElement()! }
            let ids = try await delivered(plan, on: platform)
            let events = try await platform.streamEvents().filter { ids.contains($0.orderID) }
            var expected: [String: String] = [:]
            for id in ids {
                let settled = events.filter { $0.orderID == id }.reduce(OrderStatus.accepted) { $0.after($1) ?? $0 }.rawValue
                expected[id] = settled
                await eventually("\(id) settled") { try await platform.orderStatus(id) == settled }
                let assignment = try #require(events.first { $0.orderID == id && $0.kind == .driverAssigned })
                try await rewind(id, to: assignment, platform.redis)
            }

            let stages = events.filter { $0.kind == .deliveryStatus }
            try await Self.applyAsReplicas(stages, redis: platform.redis)
            for (index, id) in ids.enumerated() {
                #expect(try await platform.orderStatus(id) == expected[id], "order \(id): \(plan[index])")
            }
        }
    }

    /// GetOrderStatus reads its own writes by applying, in its script, the delivery events its
    /// consumer group has not acknowledged (from the group's oldest pending entry, or after the
    /// last one delivered), acknowledging nothing itself; past 256 of them it has the consumer
    /// catch up first. The reader is an order service with a group of its own that it never
    /// consumes, so the platform's consumers are left undisturbed.
    @Test func getOrderStatusAppliesUnacknowledgedDeliveryEventsItself() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await delivered([[.pickedUp]], on: platform)[0]
            await eventually("\(id) picked up") { try await platform.orderStatus(id) == "PICKED_UP" }
            let events = try await platform.streamEvents().filter { $0.orderID == id }
            let assignments = events.filter { $0.kind == .driverAssigned }
            let stages = events.filter { $0.kind == .deliveryStatus }
            try #require(assignments.count == 1 && stages.count == 1)
            let (assignment, stage) = (assignments[0].id!.description, stages[0].id!.description)
            let group = "reader_under_test"
            let reader = OrderServiceLogic(redis: platform.redis, menus: platform.menuCatalog, logger: quietLogger, consumerGroup: group)
            let context = ServerContext(path: "/test", requestMetadata: Metadata(), deadline: nil)
            let redis = platform.redis
            let stream = OrderPartition(order: id).stream
            let readStatus = { () async throws -> String in
                try await reader.getOrderStatus(GetOrderStatusRequest(orderId: id), context: context).status
            }
            let lastDelivered = { () async throws -> String? in
                let groups = try await redis.send(["XINFO", "GROUPS", stream]).array ?? []
                for info in groups {
                    let fields = (info.array ?? []).map(\.string)
                    guard let name = fields.firstIndex(of: "name"), fields[name + 1] == group,
                          let delivered = fields.firstIndex(of: "last-delivered-id") else { continue }
                    return fields[delivered + 1]
                }
                return nil
            }

            // The group was handed everything up to the assignment: the stage is unapplied.
            // (From here on only ORDER_PLACED events are written, which the platform's order
            // consumer leaves alone, so it puts back nothing this test rewinds.)
            try await rewind(id, to: assignments[0], redis)
            _ = try await redis.send(["XGROUP", "CREATE", stream, group, assignment])
            #expect(try await readStatus() == "PICKED_UP")
            #expect(try await lastDelivered() == assignment, "GetOrderStatus reads and acknowledges nothing")

            // The stage handed to a consumer that has not acknowledged it is unapplied too.
            try await rewind(id, to: assignments[0], redis)
            _ = try await redis.send(["XREADGROUP", "GROUP", group, "someone", "COUNT", "1", "STREAMS", stream, ">"])
            #expect(try await lastDelivered() == stage)
            #expect(try await readStatus() == "PICKED_UP")
            #expect(try await redis.send(["XPENDING", stream, group]).array?.first?.int == 1, "still pending: nothing acknowledged")

            // More unapplied than the script looks at (orders placed in the same partition): it
            // answers BEHIND, and GetOrderStatus has the consumer catch up, then reads.
            _ = try await redis.send(["XACK", stream, group, stage])
            _ = try await redis.send(["XGROUP", "SETID", stream, group, assignment])
            var placedHere = 0
            let orders = platform.orders  // one connection for them all
            while placedHere < 300 {
                let placed = try await orders.placeOrder(PlaceOrderRequest(customerId: "c", items: ["pizza"], totalPrice: 1)).orderId
                if OrderPartition(order: placed) == OrderPartition(order: id) { placedHere += 1 }
            }
            try await rewind(id, to: assignments[0], redis)
            let keys = OrderKeys(id)
            #expect(try await redis.script(Scripts.get, keys: [stream, keys.order, keys.items], arguments: [id, group, Scripts.applyUnapplied]).string
                == Scripts.behind)
            #expect(try await readStatus() == "PICKED_UP")
            #expect(try await lastDelivered() == assignment)
        }
    }
}
