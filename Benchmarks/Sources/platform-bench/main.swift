// platform-bench: load on the running platform that h2load cannot make, because every request
// must name a different order.
//
//   platform-bench accept --orders N --concurrency C
//       places N orders, then accepts them all through the restaurant service, C at a time:
//       AcceptOrder requests/s (each one a state change, a stream entry, a publish, and an
//       automatic assignment following in the delivery service)
//   platform-bench assign-latency --rate R --seconds S
//       accepts R orders per second for S seconds and times, per order, from sending AcceptOrder
//       to the DRIVER_ASSIGNED event on `order_events`: p50/p99
import ArgumentParser
import GRPCHTTP2
import PlatformProtos
import RedisClient
import Synchronization

@main
struct PlatformBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "platform-bench", abstract: "Accept throughput and accept-to-assigned latency of the running platform.",
        subcommands: [Accept.self, AssignLatency.self])
}

struct Endpoints: ParsableArguments {
    @Option(help: "Order service port.") var orderPort = 50051
    @Option(help: "Restaurant service port.") var restaurantPort = 50052
    @Option(help: "Redis port (assign-latency listens to order_events there).") var redisPort = 6379

    func clients() -> (OrderServiceClient, RestaurantServiceClient, [GRPCChannel]) {
        let order = GRPCChannel(host: "127.0.0.1", port: orderPort)
        let restaurant = GRPCChannel(host: "127.0.0.1", port: restaurantPort)
        return (OrderServiceClient(transport: order), RestaurantServiceClient(transport: restaurant), [order, restaurant])
    }

    /// Places `count` orders for restaurant `bench`, `concurrency` at a time.
    func placeOrders(_ count: Int, concurrency: Int, client: OrderServiceClient) async throws -> [String] {
        try await withThrowingTaskGroup(of: [String].self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var ids: [String] = []
                    for _ in stride(from: worker, to: count, by: concurrency) {
                        ids.append(try await client.placeOrder(PlaceOrderRequest(
                            customerId: "bench", items: ["burger", "fries"], totalPrice: 12.5, restaurantId: "bench")).orderId)
                    }
                    return ids
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }
}

struct Accept: AsyncParsableCommand {
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Orders to place and accept.") var orders = 20_000
    @Option(help: "Accepts in flight at once.") var concurrency = 64

    func run() async throws {
        let (orderClient, restaurantClient, channels) = endpoints.clients()
        defer { channels.forEach { $0.close() } }
        let ids = try await endpoints.placeOrders(orders, concurrency: concurrency, client: orderClient)
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: endpoints.redisPort))
        let watcher = try await AssignmentWatcher(redis: redis)
        defer { watcher.stop(); redis.close() }
        let clock = ContinuousClock()
        let started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    for index in stride(from: worker, to: ids.count, by: concurrency) {
                        _ = try await restaurantClient.acceptOrder(AcceptOrderRequest(restaurantId: "bench", orderId: ids[index]))
                    }
                }
            }
            try await group.waitForAll()
        }
        let accepted = (clock.now - started).seconds
        let arrivals = await watcher.waitForAll(ids)
        let assigned = ids.filter { arrivals[$0] != nil }.count
        let drained = ((ids.compactMap { arrivals[$0] }.max() ?? clock.now) - started).seconds
        print("AcceptOrder: \(ids.count) accepts, concurrency \(concurrency): \(Int(Double(ids.count) / accepted)) req/s; "
              + "\(assigned) automatic assignments done \(rounded(drained)) s after the first accept "
              + "(\(Int(Double(assigned) / drained)) assignments/s)")
    }
}

struct AssignLatency: AsyncParsableCommand {
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Accepts per second.") var rate = 1000
    @Option(help: "Seconds of steady load.") var seconds = 5

    func run() async throws {
        let (orderClient, restaurantClient, channels) = endpoints.clients()
        defer { channels.forEach { $0.close() } }
        let ids = try await endpoints.placeOrders(rate * seconds, concurrency: 32, client: orderClient)
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: endpoints.redisPort))
        let watcher = try await AssignmentWatcher(redis: redis)
        defer { watcher.stop(); redis.close() }
        let clock = ContinuousClock()
        let interval = Duration.seconds(1) / rate
        let begin = clock.now + .milliseconds(10)
        let sent = await withTaskGroup(of: (String, ContinuousClock.Instant).self) { group in
            for (index, id) in ids.enumerated() {
                try? await clock.sleep(until: begin + interval * index)
                group.addTask {
                    let now = clock.now
                    _ = try? await restaurantClient.acceptOrder(AcceptOrderRequest(restaurantId: "bench", orderId: id))
                    return (id, now)
                }
            }
            return await group.reduce(into: [String: ContinuousClock.Instant]()) { $0[$1.0] = $1.1 }
        }
        let arrivals = await watcher.waitForAll(ids)
        let latencies = ids.compactMap { id in arrivals[id].map { $0 - sent[id]! } }.sorted()
        guard !latencies.isEmpty else { throw ValidationError("no DRIVER_ASSIGNED event arrived") }
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))].seconds * 1000 }
        print("accept-to-assigned at \(rate)/s for \(seconds) s: \(latencies.count)/\(ids.count) assigned, "
              + "p50 \(rounded(percentile(0.5))) ms, p99 \(rounded(percentile(0.99))) ms, max \(rounded(percentile(1))) ms")
    }
}

/// Listens on `order_events` and notes when each DRIVER_ASSIGNED arrives, by order id.
final class AssignmentWatcher: Sendable {
    private let arrivals: ArrivalTimes
    private let subscription: RedisSubscription
    private let listener: Task<Void, Never>

    /// The shared table of arrival times.
    final class ArrivalTimes: Sendable {
        let times = Mutex<[String: ContinuousClock.Instant]>([:])
    }

    init(redis: RedisClient) async throws {
        let subscription = try await redis.subscribe(to: ["order_events"])
        let arrivals = ArrivalTimes()
        self.subscription = subscription
        self.arrivals = arrivals
        listener = Task {
            for await event in subscription {
                guard let text = event.text, text.hasPrefix("DRIVER_ASSIGNED:") else { continue }
                let order = String(text.split(separator: ":")[1])
                let now = ContinuousClock.now
                arrivals.times.withLock { $0[order] = now }
            }
        }
    }

    /// Waits (up to `timeout`) until every order in `orders` was assigned; returns the arrival times.
    func waitForAll(_ orders: [String], timeout: Duration = .seconds(60)) async -> [String: ContinuousClock.Instant] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !arrivals.times.withLock({ current in orders.allSatisfy { current[$0] != nil } }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return arrivals.times.withLock { $0 }
    }

    func stop() {
        listener.cancel()
        subscription.close()
    }
}

func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
