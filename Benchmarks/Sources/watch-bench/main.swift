// watch-bench: WatchOrder fan-out against a running platform (scripts/bench-watch starts one).
//
// It places and accepts `--orders` orders (each gets a driver automatically), opens `--watchers`
// WatchOrder streams spread over those orders and over connections of at most 200 streams, and
// reads the order service's resident memory before and after (from /proc, by `--order-pid`): the
// difference per watcher is what an idle watcher costs the server. Then it changes orders at
// `--rate` changes/s for `--duration` seconds (UpdateDeliveryStatus, alternating PICKED_UP and
// OUT_FOR_DELIVERY, each order in turn) and measures, for every update every watcher receives, the
// time from the start of the change's call to the update's arrival: p50, p99 and max.
import ArgumentParser
import EventLoop
import FoundationEssentials
import GRPCHTTP2
import PlatformProtos
import Synchronization

@main
struct WatchBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch-bench", abstract: "WatchOrder fan-out: memory per watcher and change-to-update latency.")

    @Option(help: "OrderService port on 127.0.0.1.") var orderPort: Int
    @Option(help: "RestaurantService port on 127.0.0.1.") var restaurantPort: Int
    @Option(help: "DeliveryService port on 127.0.0.1.") var deliveryPort: Int
    @Option(help: "The order service's process id (its memory is read from /proc).") var orderPid: Int
    @Option(help: "Orders to watch.") var orders = 1_000
    @Option(help: "Open WatchOrder streams, spread evenly over the orders.") var watchers = 10_000
    @Option(help: "Order changes per second while measuring latency.") var rate = 1_000
    @Option(help: "Seconds of changes.") var duration = 10

    func run() async throws {
        let loops = (0..<2).map { EventLoop(name: "watch-bench-\($0)") }
        func channel(_ port: Int, _ index: Int) -> GRPCChannel {
            GRPCChannel(host: "127.0.0.1", port: port, eventLoop: loops[index % loops.count])
        }
        let orderClient = OrderServiceClient(transport: channel(orderPort, 0))
        let restaurantClient = RestaurantServiceClient(transport: channel(restaurantPort, 1))
        let deliveryClient = DeliveryServiceClient(transport: channel(deliveryPort, 0))

        print("placing and accepting \(orders) orders")
        let ids = try await concurrently(orders, width: 64) { index in
            let id = try await orderClient.placeOrder(PlaceOrderRequest(
                customerId: "watch_bench", items: ["tea"], totalPrice: 2, restaurantId: "watch_bench_r")).orderId
            _ = try await restaurantClient.acceptOrder(AcceptOrderRequest(restaurantId: "watch_bench_r", orderId: id))
            return id
        }
        for id in ids {
            while try await orderClient.getOrderStatus(GetOrderStatusRequest(orderId: id)).status != "ASSIGNED" {
                try await Task.sleep(for: .milliseconds(5))
            }
        }

        let before = residentKiB(pid: orderPid)
        let latencies = Latencies()
        let opened = Counter()
        let perConnection = 200
        let watchChannels = (0..<((watchers + perConnection - 1) / perConnection)).map { channel(orderPort, $0) }
        var tasks: [Task<Void, Never>] = []
        for index in 0..<watchers {
            let id = ids[index % ids.count]
            let client = OrderServiceClient(transport: watchChannels[index / perConnection])
            tasks.append(Task {
                do {
                    try await client.watchOrder(WatchOrderRequest(orderId: id)) { updates in
                        var first = true
                        for try await update in updates {
                            if first {
                                first = false
                                opened.value.add(1, ordering: .relaxed)
                            } else {
                                latencies.received(order: id, status: update.status)
                            }
                        }
                    }
                } catch {
                    if !Task.isCancelled { print("watch of \(id) ended: \(error)") }
                }
            })
        }
        let openStart = ContinuousClock.now
        while opened.value.load(ordering: .relaxed) < watchers {
            guard ContinuousClock.now - openStart < .seconds(120) else {
                throw ValidationError("only \(opened.value.load(ordering: .relaxed)) of \(watchers) watches opened in 120 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        print("opened \(watchers) watchers in \(seconds(ContinuousClock.now - openStart)) s")
        try await Task.sleep(for: .seconds(2))
        let after = residentKiB(pid: orderPid)
        print("order service resident memory: \(before) KiB before, \(after) KiB with \(watchers) idle watchers")
        print("per idle watcher: \(fixed(Double(after - before) * 1024 / Double(watchers), 0)) bytes")

        print("changing \(rate) orders/s for \(duration) s")
        let interval = Duration.nanoseconds(1_000_000_000 / Int64(rate))
        let total = rate * duration
        var next = ContinuousClock.now
        var stageOfOrder = [String: String]()
        var calls: [Task<Void, Never>] = []
        for change in 0..<total {
            let id = ids[change % ids.count]
            let stage = stageOfOrder[id] == "PICKED_UP" ? "OUT_FOR_DELIVERY" : "PICKED_UP"
            stageOfOrder[id] = stage
            next += interval
            try await Task.sleep(until: next, clock: .continuous)
            latencies.changing(order: id, to: stage)
            calls.append(Task {
                do {
                    _ = try await deliveryClient.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage))
                } catch {
                    print("change of \(id) failed: \(error)")
                }
            })
        }
        for call in calls { await call.value }
        try await Task.sleep(for: .seconds(1))
        let expected = total * (watchers / ids.count)
        let samples = latencies.samples.sorted()
        print("updates received: \(samples.count) of \(expected) expected")
        if !samples.isEmpty {
            func percentile(_ p: Double) -> String { fixed(samples[min(samples.count - 1, Int(Double(samples.count) * p))], 2) }
            print("change-to-update latency ms: p50 \(percentile(0.5)) p90 \(percentile(0.9)) p99 \(percentile(0.99)) max \(fixed(samples.last!, 2))")
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }
}

/// A shared count.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// When each order's latest change started, and the latencies of the updates that showed it.
final class Latencies: Sendable {
    private let state = Mutex<(started: [String: (status: String, at: ContinuousClock.Instant)], samples: [Double])>(([:], []))

    func changing(order: String, to status: String) {
        state.withLock { $0.started[order] = (status, .now) }
    }

    func received(order: String, status: String) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard let change = state.started[order], change.status == status else { return }
            let elapsed = now - change.at
            state.samples.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
        }
    }

    var samples: [Double] { state.withLock { $0.samples } }
}

/// Runs `count` jobs, at most `width` at a time; results in index order.
func concurrently<T: Sendable>(_ count: Int, width: Int, _ job: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
    try await withThrowingTaskGroup(of: (Int, T).self) { group in
        var results = [T?](repeating: nil, count: count)
        var next = 0
        while next < min(width, count) {
            let index = next
            group.addTask { (index, try await job(index)) }
            next += 1
        }
        while let (index, result) = try await group.next() {
            results[index] = result
            if next < count {
                let index = next
                group.addTask { (index, try await job(index)) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}

/// VmRSS of a process, in KiB.
func residentKiB(pid: Int) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

func seconds(_ duration: Duration) -> String {
    fixed(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18, 2)
}

/// `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let units = Int((value * scale).rounded())
    guard digits > 0 else { return "\(units)" }
    let whole = units / Int(scale)
    let fraction = String(abs(units) % Int(scale))
    return "\(whole)." + String(repeating: "0", count: digits - fraction.count) + fraction
}
