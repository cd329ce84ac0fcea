// The live watches end to end: real redis-server, the three services over real sockets, the
// generated streaming clients. WatchOrder shows every stage in order and ends with the order;
// a watcher that reconnects misses nothing; snapshots and streams never overlap or leave a gap,
// even while the order changes as the watch opens; the kitchen screen and the driver's app see
// their orders' changes; and many watchers share one Redis subscription.
import DeliveryLogic
import GRPCHTTP2
import PlatformProtos
import RedisClient
import Synchronization
import Testing

/// A stream read in the background: its updates so far, and how it ended.
final class Watcher<Update: Sendable>: Sendable {
    private final class Record: Sendable {
        let state = Mutex<(updates: [Update], end: Result<Void, RPCError>?)>(([], nil))
    }
    private let record = Record()
    private let task: Task<Void, Never>

    init(_ follow: @escaping @Sendable (_ handle: @Sendable (Update) -> Void) async throws -> Void) {
        let record = self.record
        task = Task {
            do {
                try await follow { update in record.state.withLock { $0.updates.append(update) } }
                record.state.withLock { $0.end = .success(()) }
            } catch {
                record.state.withLock { $0.end = .failure(RPCError(from: error)) }
            }
        }
    }

    var updates: [Update] { record.state.withLock { $0.updates } }
    var end: Result<Void, RPCError>? { record.state.withLock { $0.end } }
    var endedOK: Bool { if case .success = end { true } else { false } }
    var failure: RPCError? { if case .failure(let error) = end { error } else { nil } }

    /// Waits until at least `count` updates arrived.
    /// (15 s: a platform's first watch waits for its event hub, which under a loaded parallel run
    /// has taken more than 5 s.)
    func waitFor(_ count: Int, sourceLocation: SourceLocation = #_sourceLocation) async {
        await eventually("\(count) updates", within: .seconds(15), sourceLocation: sourceLocation) { self.updates.count >= count }
    }

    /// Waits until the stream has ended.
    func waitForEnd(sourceLocation: SourceLocation = #_sourceLocation) async {
        await eventually("the stream ended", within: .seconds(15), sourceLocation: sourceLocation) { self.end != nil }
    }

    func cancel() async {
        task.cancel()
        await task.value
    }
}

extension Platform {
    func watchOrder(_ id: String) -> Watcher<OrderUpdate> {
        let client = orders
        return Watcher { handle in
            try await client.watchOrder(WatchOrderRequest(orderId: id)) { updates in
                for try await update in updates { handle(update) }
            }
        }
    }

    func watchRestaurant(_ id: String) -> Watcher<RestaurantOrderUpdate> {
        let client = restaurants
        return Watcher { handle in
            try await client.watchRestaurantOrders(WatchRestaurantOrdersRequest(restaurantId: id)) { updates in
                for try await update in updates { handle(update) }
            }
        }
    }

    func watchDriver(_ id: String) -> Watcher<DriverAssignmentUpdate> {
        let client = deliveries
        return Watcher { handle in
            try await client.watchDriverAssignments(WatchDriverAssignmentsRequest(driverId: id)) { updates in
                for try await update in updates { handle(update) }
            }
        }
    }

    func updateDelivery(_ id: String, _ status: String) async throws {
        _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: status))
    }
}

/// The statuses a delivered order passes through, in order.
let deliveredJourney = ["PLACED", "ACCEPTED", "ASSIGNED", "PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"]

@Suite struct WatchTests {
    @Test func watchOrderShowsEveryStageInOrderAndEndsWithTheOrder() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await platform.placeOrder(restaurant: "r1")
            let watcher = platform.watchOrder(id)
            await watcher.waitFor(1)
            _ = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id))
            await watcher.waitFor(3)  // ACCEPTED, then the automatic assignment
            for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] { try await platform.updateDelivery(id, stage) }
            await watcher.waitForEnd()
            let updates = watcher.updates
            #expect(updates.map(\.status) == deliveredJourney)
            #expect(updates.map(\.final) == [false, false, false, false, false, true])
            #expect(updates.dropFirst(2).allSatisfy { $0.driverId == "d1" })
            #expect(updates.allSatisfy { $0.orderId == id && $0.restaurantId == "r1" && $0.customerId == "customer-1" })
            let times = updates.map(\.updatedAtUnixMs)
            #expect(times.allSatisfy { $0 > 0 } && times == times.sorted())
            #expect(watcher.endedOK)
        }
    }

    /// A watch waits without a task of its own (the call is handed over to an OrderWatch): when
    /// the service goes away it still ends, with UNAVAILABLE, so the client knows to reconnect.
    @Test func watchersOfAServiceGoingAwayEndWithUnavailable() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await platform.placeOrder(restaurant: "r1")
            let watchers = [platform.watchOrder(id), platform.watchOrder(id)]
            for watcher in watchers { await watcher.waitFor(1) }
            await platform.stopOrderService()
            for watcher in watchers {
                await watcher.waitForEnd()
                // The hub's reason, sent by the watch itself (not the connection closing under it).
                #expect(watcher.failure == RPCError(.unavailable, "the server is shutting down"))
                #expect(watcher.updates.map(\.status) == ["PLACED"])
            }
        }
    }

    @Test func aWatcherThatReconnectsMissesNothing() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let id = try await platform.placeAcceptedOrder(restaurant: "r1")
            let first = platform.watchOrder(id)
            await eventually("assigned") { first.updates.last?.status == "ASSIGNED" }
            await first.cancel()
            // Changes while nobody watches: the next watch starts from where the order is.
            try await platform.updateDelivery(id, "PICKED_UP")
            let second = platform.watchOrder(id)
            await second.waitFor(1)
            #expect(second.updates.first?.status == "PICKED_UP")
            try await platform.updateDelivery(id, "OUT_FOR_DELIVERY")
            try await platform.updateDelivery(id, "DELIVERED")
            await second.waitForEnd()
            #expect(second.updates.map(\.status) == ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"])
        }
    }

    @Test func watchesOpenedWhileOrdersChangeNeverRepeatOrSkipAStage() async throws {
        try await withPlatform(drivers: ["d1", "d2"]) { platform in
            let ids = try await (0..<20).asyncMap { _ in try await platform.placeOrder(restaurant: "r1") }
            var watchers: [Watcher<OrderUpdate>] = []
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask {
                        _ = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id))
                        await eventually("assigned") { (try? await platform.orderStatus(id)) == "ASSIGNED" }
                        for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] { try await platform.updateDelivery(id, stage) }
                    }
                }
                // The watches open while those changes run.
                for id in ids { watchers.append(platform.watchOrder(id)) }
                try await group.waitForAll()
            }
            for (id, watcher) in zip(ids, watchers) {
                await watcher.waitForEnd()
                let statuses = watcher.updates.map(\.status)
                // Whatever the snapshot showed, the rest of the journey follows it exactly once.
                guard let start = statuses.first.flatMap(deliveredJourney.firstIndex(of:)) else {
                    Issue.record("\(id): unexpected first status \(statuses)")
                    continue
                }
                #expect(statuses == Array(deliveredJourney[start...]), "\(id): \(statuses)")
            }
        }
    }

    @Test func watchOrderRefusesUnknownAndInvalidOrdersAndEndsAtOnceWhenFinal() async throws {
        try await withPlatform { platform in
            let unknown = platform.watchOrder("order_999999")
            await unknown.waitForEnd()
            #expect(unknown.failure?.code == .notFound)
            let invalid = platform.watchOrder("not valid")
            await invalid.waitForEnd()
            #expect(invalid.failure?.code == .invalidArgument)
            let id = try await platform.placeOrder()
            _ = try await platform.orders.cancelOrder(CancelOrderRequest(orderId: id))
            let canceled = platform.watchOrder(id)
            await canceled.waitForEnd()
            #expect(canceled.updates.map(\.status) == ["CANCELED"])
            #expect(canceled.updates.first?.final == true)
        }
    }

    @Test func theKitchenScreenSeesItsNewOrdersAndTheirChanges() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let kitchen = platform.watchRestaurant("r1")
            // The watch shows only what happens after it subscribed: place warm-up orders until one shows.
            let warmups = Mutex<Set<String>>([])
            await eventually("the kitchen screen is live", within: .seconds(15)) {
                let warmup = try await platform.placeOrder(restaurant: "r1")
                warmups.withLock { _ = $0.insert(warmup) }
                try await Task.sleep(for: .milliseconds(50))
                return !kitchen.updates.isEmpty
            }
            let first = try await platform.placeOrder(items: ["pizza", "cola"], total: 14, restaurant: "r1")
            _ = try await platform.placeOrder(restaurant: "r2")
            let second = try await platform.placeOrder(restaurant: "r1")
            _ = try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: first))
            _ = try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: second))
            await eventually("five updates of the two orders") {
                kitchen.updates.filter { $0.orderId == first || $0.orderId == second }.count >= 5
            }
            let skipped = warmups.withLock { $0 }
            let updates = kitchen.updates.filter { !skipped.contains($0.orderId) }
            // Each order's changes in order (the automatic assignment races the reject).
            #expect(updates.filter { $0.orderId == first }.map(\.status) == ["PLACED", "ACCEPTED", "ASSIGNED"])
            #expect(updates.filter { $0.orderId == second }.map(\.status) == ["PLACED", "REJECTED"])
            #expect(updates.count == 5)
            // `first`, not `[0]`: after a wait that timed out, a failed expectation, not a crash of every test.
            #expect(updates.first?.orderId == first && updates.first?.items == ["pizza", "cola"] && updates.first?.totalPrice == 14)
            #expect(updates.first { $0.status == "ASSIGNED" }?.driverId == "d1")
            await kitchen.cancel()
        }
    }

    @Test func theDriversAppSeesAssignmentsReassignmentsAndStages() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            let d1 = platform.watchDriver("d1")
            let d2 = platform.watchDriver("d2")
            try await Task.sleep(for: .milliseconds(100))
            let id = try await platform.placeAcceptedOrder(restaurant: "r1")
            await d1.waitFor(1)
            #expect(d1.updates.first.map { [$0.orderId, $0.status] } == [id, "ASSIGNED"])
            _ = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d2"))
            try await platform.updateDelivery(id, "PICKED_UP")
            await d1.waitFor(2)
            await d2.waitFor(2)
            #expect(d1.updates.map(\.status) == ["ASSIGNED", "REASSIGNED"])
            #expect(d1.updates.count == 2 && d1.updates.first?.assignmentId == d1.updates.last?.assignmentId)
            #expect(d2.updates.map(\.status) == ["ASSIGNED", "PICKED_UP"])
            // A new watch of d2 starts with its open assignment.
            let again = platform.watchDriver("d2")
            await again.waitFor(1)
            #expect(again.updates.map(\.status) == ["PICKED_UP"])
            for watcher in [d1, d2, again] { await watcher.cancel() }
        }
    }

    @Test func manyWatchersShareOneRedisConnection() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeOrder()
            let first = platform.watchOrder(id)
            await first.waitFor(1)
            let before = try await platform.redisConnections()
            let watchers = (0..<100).map { _ in platform.watchOrder(id) }
            for watcher in watchers { await watcher.waitFor(1) }
            #expect(try await platform.redisConnections() == before)
            _ = try await platform.orders.cancelOrder(CancelOrderRequest(orderId: id))
            for watcher in watchers + [first] {
                await watcher.waitForEnd()
                #expect(watcher.updates.map(\.status) == ["PLACED", "CANCELED"])
            }
        }
    }
}

extension Platform {
    /// Clients connected to Redis now.
    func redisConnections() async throws -> Int {
        let list = try await redis.send(["CLIENT", "LIST"]).string ?? ""
        return list.split(separator: "\n").count
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
