// `test-client bench`: a closed-loop load generator. `--concurrency` tasks share one channel per
// service (so one multiplexed HTTP/2 connection each) and each sends its next call as soon as the
// previous one answered, taking RPCs from the weighted `--rpc` mix in turn. It stops by itself at
// `--duration` or after `--count` calls, whichever comes first; while it runs, one line a second
// on standard error shows progress; at the end a table gives per RPC the rate, latency
// percentiles and errors by status. Exit 1 if any call failed.
//
// Reads need something to read: before the clock starts, the bench places the orders `status`
// and `cancel` use and writes the menu `menu` reads, all under a run id of its own.
import ArgumentParser
import Glibc
import PlatformProtos
import Synchronization

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate load and report rates and latencies.")

    /// The calls the bench can make.
    enum RPC: String, CaseIterable, Sendable {
        case place, status, cancel, menu, updateMenu = "update-menu", assignments, health
    }

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Weighted mix, name[:weight],... of \(RPC.allCases.map(\.rawValue).joined(separator: ", ")).")
    var rpc = "place:1,status:4"
    @Option(help: "Calls in flight at once.") var concurrency = 16
    @Option(help: "Seconds to run (default 10 unless --count is given).") var duration: Double?
    @Option(help: "Calls to make in all.") var count: Int?

    func validate() throws {
        _ = try Self.schedule(rpc)
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be 1 to 10000") }
        if let duration, !(duration > 0 && duration.isFinite) { throw ValidationError("--duration must be positive") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    /// `place:1,status:4` as the sequence workers cycle through: place, status, status, status, status.
    static func schedule(_ mix: String) throws -> [RPC] {
        let schedule = try mix.split(separator: ",").flatMap { entry -> [RPC] in
            let parts = entry.split(separator: ":")
            guard let rpc = RPC(rawValue: String(parts[0])), parts.count <= 2,
                  let weight = parts.count == 2 ? Int(parts[1]) : 1, (0...1000).contains(weight) else {
                throw ValidationError("--rpc: cannot read \(entry); expected name[:weight] with a name of \(RPC.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return Array(repeating: rpc, count: weight)
        }
        guard !schedule.isEmpty else { throw ValidationError("--rpc: the mix has no calls") }
        return schedule
    }

    func run() async throws {
        let schedule = try Self.schedule(rpc)
        let services = try connection.connect()
        defer { services.close() }
        let fixture: Fixture
        do {
            fixture = try await Fixture.prepare(for: Set(schedule), services)
        } catch {
            printError("✗ preparing the bench: \(error)")
            throw ExitCode.failure
        }
        let limit = Limit(calls: count, time: (duration ?? (count == nil ? 10 : nil)).map { .milliseconds(Int64($0 * 1000)) })
        printError("bench: \(concurrency) in flight, mix \(rpc), \(limit)")
        let progress = Progress()
        let started = ContinuousClock.now
        let reporter = Task { await progress.report(every: .seconds(1), since: started) }
        let samples = await withTaskGroup(of: Samples.self) { group in
            for _ in 0..<concurrency {
                group.addTask { await Self.work(schedule, fixture, services, limit: limit, started: started, progress: progress) }
            }
            return await group.reduce(into: Samples()) { $0.merge($1) }
        }
        let elapsed = started.duration(to: .now)
        reporter.cancel()
        await reporter.value
        print(samples.table(elapsed: elapsed))
        if samples.errorCount > 0 { throw ExitCode.failure }
    }

    /// One closed-loop worker: takes call numbers until the limit, makes them, keeps the timings.
    private static func work(_ schedule: [RPC], _ fixture: Fixture, _ services: Services, limit: Limit,
                             started: ContinuousClock.Instant, progress: Progress) async -> Samples {
        var samples = Samples()
        while true {
            let number = progress.issued.add(1, ordering: .relaxed).oldValue
            if let calls = limit.calls, number >= calls { break }
            if let time = limit.time, started.duration(to: .now) >= time { break }
            let rpc = schedule[number % schedule.count]
            let callStarted = ContinuousClock.now
            let failure = await fixture.call(rpc, number: number, services)
            samples.record(rpc, latency: callStarted.duration(to: .now), failure: failure)
            progress.finished(failed: failure != nil)
        }
        return samples
    }
}

/// When the bench stops: after `calls` calls or `time`, whichever comes first.
struct Limit: CustomStringConvertible, Sendable {
    let calls: Int?
    let time: Duration?

    var description: String {
        [calls.map { "\($0) calls" }, time.map { "\(fixed($0.seconds, digits: 1)) s" }].compactMap { $0 }.joined(separator: " or ")
    }
}

/// The data reads need, made before the clock starts, and how each RPC is called.
struct Fixture: Sendable {
    static let seededOrders = 256

    let customer: String
    let restaurant: String
    let driver: String
    let orders: [String]
    let menu: [MenuItem]

    static func prepare(for rpcs: Set<Bench.RPC>, _ services: Services) async throws(ServiceError) -> Fixture {
        let runID = String(UInt64.random(in: 0..<2_176_782_336), radix: 36)
        let customer = "bench_customer_\(runID)"
        let restaurant = "bench_restaurant_\(runID)"
        let menu = [MenuItem(itemId: "burger", name: "Burger", price: 9.5), MenuItem(itemId: "fries", name: "Fries", price: 3.5)]
        var orders: [String] = []
        if !rpcs.isDisjoint(with: [.status, .cancel]) {
            for _ in 0..<seededOrders {
                let request = PlaceOrderRequest(customerId: customer, items: ["burger", "fries"], totalPrice: 13)
                orders.append(try await services.order.call { try await $0.placeOrder(request, options: $1) }.orderId)
            }
        }
        if rpcs.contains(.menu) {
            _ = try await services.restaurant.call {
                try await $0.updateMenu(UpdateMenuRequest(restaurantId: restaurant, items: menu), options: $1)
            }
        }
        return Fixture(customer: customer, restaurant: restaurant, driver: "bench_driver_\(runID)", orders: orders, menu: menu)
    }

    /// Makes call `number` of kind `rpc`; the status code when it failed.
    func call(_ rpc: Bench.RPC, number: Int, _ services: Services) async -> StatusCode? {
        do throws(ServiceError) {
            switch rpc {
            case .place:
                let request = PlaceOrderRequest(customerId: customer, items: ["burger", "fries"], totalPrice: 13)
                _ = try await services.order.call { try await $0.placeOrder(request, options: $1) }
            case .status:
                let request = GetOrderStatusRequest(orderId: orders[number % orders.count])
                _ = try await services.order.call { try await $0.getOrderStatus(request, options: $1) }
            case .cancel:
                // After the first round these answer COULD_NOT_CANCEL: still a full read-check-write script.
                let request = CancelOrderRequest(orderId: orders[number % orders.count])
                _ = try await services.order.call { try await $0.cancelOrder(request, options: $1) }
            case .menu:
                _ = try await services.restaurant.call { try await $0.getMenu(GetMenuRequest(restaurantId: restaurant), options: $1) }
            case .updateMenu:
                let request = UpdateMenuRequest(restaurantId: restaurant, items: menu)
                _ = try await services.restaurant.call { try await $0.updateMenu(request, options: $1) }
            case .assignments:
                let request = GetDriverAssignmentsRequest(driverId: driver)
                _ = try await services.delivery.call { try await $0.getDriverAssignments(request, options: $1) }
            case .health:
                _ = try await services.order.checkHealth()
            }
            return nil
        } catch {
            return error.error.code
        }
    }
}

/// Counters the workers share with the once-a-second progress line.
final class Progress: Sendable {
    /// Call numbers handed out (may run past the limit by one per worker).
    let issued = Atomic<Int>(0)
    private let completed = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)

    func finished(failed: Bool) {
        completed.add(1, ordering: .relaxed)
        if failed { self.failed.add(1, ordering: .relaxed) }
    }

    /// Prints a progress line every `interval` until cancelled: rewritten in place on a terminal,
    /// one per interval otherwise (a log keeps them all).
    func report(every interval: Duration, since started: ContinuousClock.Instant) async {
        let onTerminal = isatty(STDERR_FILENO) == 1
        var previous = 0
        while (try? await Task.sleep(for: interval)) != nil {
            let done = completed.load(ordering: .relaxed)
            let elapsed = started.duration(to: .now).seconds
            let line = "[\(fixed(elapsed, digits: 0)) s] \(done) calls, \(done - previous)/s, \(failed.load(ordering: .relaxed)) errors"
            previous = done
            if onTerminal {
                var standardError = StandardError()
                print("\r\u{1B}[K" + line, terminator: "", to: &standardError)
            } else {
                printError(line)
            }
        }
        if onTerminal { printError("") }
    }
}

/// One worker's timings and errors, merged into the final table.
struct Samples: Sendable {
    private var latencies: [Bench.RPC: [Duration]] = [:]
    private var errors: [Bench.RPC: [StatusCode: Int]] = [:]

    var errorCount: Int { errors.values.flatMap(\.values).reduce(0, +) }

    mutating func record(_ rpc: Bench.RPC, latency: Duration, failure: StatusCode?) {
        if let failure {
            errors[rpc, default: [:]][failure, default: 0] += 1
        } else {
            latencies[rpc, default: []].append(latency)
        }
    }

    mutating func merge(_ other: Samples) {
        latencies.merge(other.latencies, uniquingKeysWith: +)
        errors.merge(other.errors) { $0.merging($1, uniquingKeysWith: +) }
    }

    /// Per RPC: successful calls, rate, latency p50/p90/p99/max in ms, errors by status.
    func table(elapsed: Duration) -> String {
        let header = ["rpc", "ok", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
        var rows: [[String]] = []
        var failures: [String] = []
        for rpc in Bench.RPC.allCases where latencies[rpc] != nil || errors[rpc] != nil {
            let sorted = (latencies[rpc] ?? []).sorted()
            let errorCount = errors[rpc]?.values.reduce(0, +) ?? 0
            let rate = Double(sorted.count + errorCount) / elapsed.seconds
            func percentile(_ fraction: Double) -> String {
                guard !sorted.isEmpty else { return "-" }
                let index = min(sorted.count - 1, max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))
                return fixed(sorted[index].seconds * 1000, digits: 2)
            }
            rows.append([rpc.rawValue, "\(sorted.count)", "\(errorCount)", fixed(rate, digits: 0),
                         percentile(0.5), percentile(0.9), percentile(0.99), percentile(1)])
            for (code, count) in (errors[rpc] ?? [:]).sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                failures.append("  \(rpc.rawValue): \(count) × \(code)")
            }
        }
        let total = latencies.values.map(\.count).reduce(0, +) + errorCount
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        let lines = ([header] + rows).map { row in
            row.enumerated().map { padded($1, widths[$0], alignRight: $0 > 0) }.joined(separator: "  ")
        }
        let summary = "\(total) calls in \(fixed(elapsed.seconds, digits: 1)) s: \(fixed(Double(total) / elapsed.seconds, digits: 0)) calls/s"
        return ([summary] + lines + (failures.isEmpty ? [] : ["errors:"] + failures)).joined(separator: "\n")
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
