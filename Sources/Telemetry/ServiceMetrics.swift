// A service's metrics: one swift-prometheus registry, with swift-metrics bootstrapped onto it so
// that any module's `Counter(label:)` (the business counters of the service logic) lands there
// too, and the collectors that bring figures up to date just before each scrape.
//
// Two kinds of figure feed the registry. Counts the request path makes (calls, messages, Redis
// commands) are kept by loop-confined recorders in plain memory, since that path must take no
// lock and allocate nothing; a collector hops onto each loop when scraped, takes what was counted
// since the last scrape and adds it to the registry's counters and histograms. Figures that
// are read rather than counted (memory, connections, consumer lag) are read by a collector then.
// Collectors run one after another, each for at most `collectorLimit`: one that takes longer
// (Redis slow to answer the lag queries) finishes in the background, its figures a scrape late,
// so a scrape always answers well within Prometheus' default 10 s timeout.
import CoreMetrics
import EventLoop
import Prometheus
import Synchronization

/// The registry a service's /metrics shows, and what refreshes it.
public final class ServiceMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let collectors = Mutex<[@Sendable () async -> Void]>([])
    /// How long a scrape waits for one collector.
    static let collectorLimit: Duration = .seconds(1)

    public init() {}

    /// Points swift-metrics (`Counter`, `Gauge`, `Timer` of any module) at this registry. Once
    /// per process, before the first such metric is made.
    public func bootstrapMetricsSystem() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// Runs `collect` before every scrape (it updates gauges, folds in loop counts).
    public func addCollector(_ collect: @escaping @Sendable () async -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// A gauge set from `read` at each scrape.
    public func addGauge(_ name: String, help: String, _ read: @escaping @Sendable () -> Double) {
        let gauge = gauge(name, help)
        addCollector { gauge.set(read()) }
    }

    /// The text exposition, every collector run first.
    public func exposition() async -> [UInt8] {
        for collect in collectors.withLock({ $0 }) { await Self.run(collect, within: Self.collectorLimit) }
        return registry.emitToBuffer()
    }

    /// Runs `collect`, waiting for it at most `limit`.
    private static func run(_ collect: @escaping @Sendable () async -> Void, within limit: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = Mutex<CheckedContinuation<Void, Never>?>(continuation)
            let resume: @Sendable () -> Void = { waiting.withLock { $0.take() }?.resume() }
            let timer = Task {
                try? await Task.sleep(for: limit)
                resume()
            }
            Task {
                await collect()
                timer.cancel()
                resume()
            }
        }
    }

    /// A counter of this registry, with its help text.
    func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Prometheus.Counter {
        registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// A gauge of this registry, with its help text.
    func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// A histogram of durations of this registry, in seconds. (A `ValueHistogram` of seconds,
    /// not a `DurationHistogram`: folding loop counts in records values one by one, and
    /// comparing doubles is several times cheaper than comparing `Duration`s.)
    func histogram(_ name: String, _ help: String, _ labels: [(String, String)] = [], buckets: LatencyBuckets) -> ValueHistogram {
        registry.makeValueHistogram(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help),
                                    labels: labels, buckets: buckets.seconds)
    }
}

/// Histogram bucket bounds for latencies. Our calls take tens of microseconds to milliseconds,
/// so the buckets start at 100 µs, below Prometheus' default 5 ms, and end at 10 s.
public struct LatencyBuckets: Sendable {
    /// The upper bounds, in seconds.
    public let seconds: [Double]
    let nanoseconds: [Int64]

    public init(seconds: [Double]) {
        self.seconds = seconds
        nanoseconds = seconds.map { Int64(($0 * 1e9).rounded()) }
    }

    public static let calls = LatencyBuckets(seconds: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                       0.25, 0.5, 1, 2.5, 5, 10])

    /// The bucket a duration falls in (`bounds.count` for above the last bound).
    func index(of nanoseconds: Int64) -> Int {
        var index = 0
        while index < self.nanoseconds.count, nanoseconds > self.nanoseconds[index] { index += 1 }
        return index
    }
}

/// Observations of one histogram per slot (a method, say), kept where they happen: per bucket, a
/// count and a sum, so that folding them into a registry histogram later is exact.
struct HistogramTally: Sendable {
    let buckets: LatencyBuckets
    private(set) var counts: [Int]
    private(set) var sums: [Int64]
    private var width: Int { buckets.nanoseconds.count + 1 }

    init(slots: Int, buckets: LatencyBuckets) {
        self.buckets = buckets
        counts = Array(repeating: 0, count: slots * (buckets.nanoseconds.count + 1))
        sums = counts.map(Int64.init)
    }

    mutating func record(slot: Int, _ duration: Duration) {
        let nanoseconds = Int64(clamping: duration.nanoseconds)
        let cell = slot * width + buckets.index(of: nanoseconds)
        counts[cell] += 1
        sums[cell] += nanoseconds
    }

    /// Adds slot `slot`'s observations to `histogram` (in seconds). The registry's histogram
    /// records single values, so each bucket's observations are replayed as values inside that
    /// bucket whose sum is theirs: buckets and count come out exactly as if recorded one by one,
    /// and the sum to within the rounding of doubles.
    func fold(slot: Int, into histogram: ValueHistogram) {
        for bucket in 0..<width {
            let count = counts[slot * width + bucket]
            guard count > 0 else { continue }
            let sum = sums[slot * width + bucket]
            let quotient = sum / Int64(count)
            let remainder = Int(sum % Int64(count))
            // `remainder` values one above the mean's floor, the rest at it: both are within the
            // bucket's range, since its observations' minimum and maximum bracket them.
            for index in 0..<count {
                histogram.record(Double(quotient + (index < remainder ? 1 : 0)) / 1e9)
            }
        }
    }
}

/// Loop-confined recorders, and how to read them all from a scrape.
final class LoopRecorders<Recorder: AnyObject>: Sendable {
    private let recorders = Mutex<[LoopBound<Recorder>]>([])

    func add(_ recorder: Recorder, loop: EventLoop) {
        recorders.withLock { $0.append(LoopBound(recorder, loop: loop)) }
    }

    /// `take` run on each recorder's loop, one loop after another; the results in order.
    func take<Taken: Sendable>(_ take: @escaping @Sendable (Recorder) -> Taken) async -> [Taken] {
        var results: [Taken] = []
        for bound in recorders.withLock({ $0 }) {
            results.append(await withCheckedContinuation { continuation in
                bound.loop.execute { continuation.resume(returning: take(bound.value)) }
            })
        }
        return results
    }
}

/// `grpc_code` label values: the Go names of the codes (`codes.Code.String()`), which every
/// gRPC dashboard and alert expects.
enum StatusCodeLabel {
    static let names = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
                        "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
                        "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"]
}
