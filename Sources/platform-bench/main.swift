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
        let seconds = (clock.now - started).seconds
        print("AcceptOrder: \(ids.count) accepts, concurrency \(concurrency): \(Int(Double(ids.count) / seconds)) req/s")
    }
}

struct AssignLatency: AsyncParsableCommand {
    @OptionGroup var endpoints: Endpoints
    @Option(help: "Accepts per second.") var rate = 1000
    @Option(help: "Seconds of steady load.") var seconds = 5

    func run() async throws {
        let (orderClient, restaurantClient, channels) = endpoints.clients()
        defer { channels.forEach { $0.close() } }
        let total = rate * seconds
        let ids = try await endpoints.placeOrders(total, concurrency: 32, client: orderClient)
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: endpoints.redisPort))
        defer { redis.close() }
        let subscription = try await redis.subscribe(to: ["order_events"])
        let clock = ContinuousClock()
        let sent = SendTimes()
        let listener = Task { () -> [Duration] in
            var latencies: [Duration] = []
            for await event in subscription {
                guard let text = event.text, text.hasPrefix("DRIVER_ASSIGNED:") else { continue }
                let order = String(text.split(separator: ":")[1])
                if let start = sent.times.withLock({ $0.removeValue(forKey: order) }) { latencies.append(clock.now - start) }
                if latencies.count == total { break }
            }
            return latencies
        }
        let interval = Duration.seconds(1) / rate
        let begin = clock.now
        await withTaskGroup(of: Void.self) { group in
            for (index, id) in ids.enumerated() {
                try? await clock.sleep(until: begin + interval * index)
                group.addTask {
                    sent.times.withLock { $0[id] = clock.now }
                    _ = try? await restaurantClient.acceptOrder(AcceptOrderRequest(restaurantId: "bench", orderId: id))
                }
            }
        }
        let deadline = Task { try await Task.sleep(for: .seconds(10)); subscription.close() }
        var latencies = await listener.value
        deadline.cancel()
        subscription.close()
        latencies.sort()
        guard !latencies.isEmpty else { throw ValidationError("no DRIVER_ASSIGNED event arrived") }
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))].seconds * 1000 }
        print("accept-to-assigned at \(rate)/s for \(seconds) s: \(latencies.count)/\(total) assigned, "
              + "p50 \(rounded(percentile(0.5))) ms, p99 \(rounded(percentile(0.99))) ms, max \(rounded(percentile(1))) ms")
    }

    private func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }
}

/// When each AcceptOrder was sent, by order id (shared by the senders and the listener).
final class SendTimes: Sendable {
    let times = Mutex<[String: ContinuousClock.Instant]>([:])
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
