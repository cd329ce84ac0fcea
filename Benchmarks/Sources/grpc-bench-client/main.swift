// grpc-bench-client: measures our gRPC client, and writes the request bodies h2load sends.
//
//   grpc-bench-client bodies DIR               gRPC-framed PlaceOrder/GetOrderStatus/CancelOrder
//                                               requests (the same messages as the peers' bodies),
//                                               AcceptOrder of order_1 for the platform, and
//                                               StreamBench/Stream of 100 replies of 64 bytes
//   grpc-bench-client menu --port P --order-port O   UpdateMenu of restaurant `bench`, which the
//                                               priced PlaceOrder body orders from, and one
//                                               such order, checked
//   grpc-bench-client latency --port P          unary GetOrderStatus one at a time: p50/p90/p99
//   grpc-bench-client throughput --port P       many concurrent calls on one channel: calls/s
// The server is any OrderService with the peers' semantics (grpc-bench-server, or a peer).
import ArgumentParser
import BenchProtos
import FoundationEssentials
import GRPCHTTP2
import PlatformProtos

@main
struct BenchClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-bench-client",
        abstract: "Benchmarks our gRPC client and writes h2load request bodies.",
        subcommands: [Bodies.self, Menu.self, Latency.self, Throughput.self])
}

struct Target: ParsableArguments {
    @Option(help: "Server host.") var host = "127.0.0.1"
    @Option(help: "Server port.") var port = 60051

    /// A channel with one order placed, so GetOrderStatus of `orderID` succeeds.
    func prepare() async throws -> (OrderServiceClient, GRPCChannel, String) {
        let channel = GRPCChannel(host: host, port: port)
        let client = OrderServiceClient(transport: channel)
        let placed = try await client.placeOrder(BenchRequests.place)
        return (client, channel, placed.orderId)
    }
}

/// The peers' benchmark messages: customer_1, [burger, fries, cola], 12.5; order_1.
enum BenchRequests {
    static let place = PlaceOrderRequest(customerId: "customer_1", items: ["burger", "fries", "cola"], totalPrice: 12.5)
    static let status = GetOrderStatusRequest(orderId: "order_1")
    static let cancel = CancelOrderRequest(orderId: "order_1")
    /// The same order by three menu lines of restaurant `bench` (BenchRequests.menu), priced by the
    /// order service.
    static let placeLines = PlaceOrderRequest(customerId: "customer_1", restaurantId: "bench", lines: [
        OrderLine(menuItemId: "burger", quantity: 1), OrderLine(menuItemId: "fries", quantity: 1), OrderLine(menuItemId: "cola", quantity: 1)])
    /// Restaurant `bench`'s menu, for `placeLines`.
    static let menu = UpdateMenuRequest(restaurantId: "bench", items: [
        MenuItem(itemId: "burger", name: "Burger", priceCents: 850), MenuItem(itemId: "fries", name: "Fries", priceCents: 250),
        MenuItem(itemId: "cola", name: "Cola", priceCents: 150)], currency: "USD")
    /// For the platform's restaurant service: order_1 accepted once, then the same decision again.
    static let accept = AcceptOrderRequest(restaurantId: "r1", orderId: "order_1")
    /// The C++ peer's streaming yardstick: one stream of 100 replies of 64 bytes.
    static let stream = StreamRequest(count: 100, payloadBytes: 64)

    static func framed(_ message: some GRPCMessage) -> [UInt8] {
        MessageFraming.frame(message.serializedBytes())
    }
}

struct Bodies: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write gRPC-framed request bodies for h2load.")
    @Argument(help: "Output directory (must exist).") var directory: String

    func run() throws {
        for (name, bytes) in [("place_order.bin", BenchRequests.framed(BenchRequests.place)),
                              ("place_order_lines.bin", BenchRequests.framed(BenchRequests.placeLines)),
                              ("get_order_status.bin", BenchRequests.framed(BenchRequests.status)),
                              ("cancel_order.bin", BenchRequests.framed(BenchRequests.cancel)),
                              ("accept_order.bin", BenchRequests.framed(BenchRequests.accept)),
                              ("stream_100x64.bin", BenchRequests.framed(BenchRequests.stream))] {
            try Data(bytes).write(to: URL(fileURLWithPath: directory).appendingPathComponent(name))
        }
    }
}

struct Menu: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set restaurant bench's menu on a restaurant service, then check that an order service prices from it.")
    @Option(help: "Services host.") var host = "127.0.0.1"
    @Option(help: "Restaurant service port.") var port: Int
    @Option(help: "Order service port.") var orderPort: Int

    func run() async throws {
        let restaurants = GRPCChannel(host: host, port: port), orders = GRPCChannel(host: host, port: orderPort)
        defer { restaurants.close(); orders.close() }
        _ = try await RestaurantServiceClient(transport: restaurants).updateMenu(BenchRequests.menu)
        // h2load cannot tell a gRPC error from a reply: make sure the priced body succeeds.
        let placed = try await OrderServiceClient(transport: orders).placeOrder(BenchRequests.placeLines)
        guard placed.totalCents == 1250 else { throw ValidationError("the priced order came back with \(placed)") }
    }
}

struct Latency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unary calls one at a time; prints latency percentiles.")
    @OptionGroup var target: Target
    @Option(help: "Measured calls (after a warm-up of a tenth as many).") var count = 20000

    func run() async throws {
        let (client, channel, orderID) = try await target.prepare()
        defer { channel.close() }
        let request = GetOrderStatusRequest(orderId: orderID)
        for _ in 0..<(count / 10) { _ = try await client.getOrderStatus(request) }
        var samples: [Duration] = []
        samples.reserveCapacity(count)
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0..<count {
            let begin = clock.now
            _ = try await client.getOrderStatus(request)
            samples.append(clock.now - begin)
        }
        let elapsed = clock.now - started
        samples.sort()
        func percentile(_ p: Double) -> String {
            let sample = samples[min(samples.count - 1, Int(Double(samples.count) * p))]
            let microseconds = Int((sample.seconds * 1_000_000).rounded())
            return "\(microseconds / 1000).\(String(repeating: "0", count: 3 - String(microseconds % 1000).count))\(microseconds % 1000)"
        }
        print("calls=\(count) rps=\(Int(Double(count) / elapsed.seconds)) p50_ms=\(percentile(0.5)) p90_ms=\(percentile(0.9)) p99_ms=\(percentile(0.99)) max_ms=\(percentile(1))")
    }
}

struct Throughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Concurrent unary calls on one channel; prints calls/s.")
    @OptionGroup var target: Target
    @Option(help: "Calls in flight at once.") var concurrency = 128
    @Option(help: "Total calls.") var count = 200_000

    func run() async throws {
        let (client, channel, orderID) = try await target.prepare()
        defer { channel.close() }
        let request = GetOrderStatusRequest(orderId: orderID)
        let perTask = count / concurrency
        let clock = ContinuousClock()
        let started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { _ = try await client.getOrderStatus(request) } }
            }
            try await group.waitForAll()
        }
        let elapsed = clock.now - started
        print("calls=\(perTask * concurrency) concurrency=\(concurrency) rps=\(Int(Double(perTask * concurrency) / elapsed.seconds))")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
