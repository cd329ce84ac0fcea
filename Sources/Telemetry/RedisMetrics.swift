// Redis metrics: commands by name, errors by kind, one latency histogram, reconnections, a
// cluster's redirects and the read cache's hits and misses. The client's recorder counts on the client's loop in plain memory; a
// scrape folds its counts in. Command names and error kinds are interned into slots as they
// are first met, up to a bound (more fall under "other"), so neither a typo nor a hostile reply
// can grow the series without end.
import EventLoop
import Prometheus
import RedisClient
import Synchronization

/// The Redis client's metrics; give it to `RedisClient(observer:)`.
public final class RedisMetrics: RedisObserver {
    private let metrics: ServiceMetrics
    private let recorders = LoopRecorders<Recorder>()
    private let latency: ValueHistogram
    private let reconnects: Prometheus.Counter
    private let moved: Prometheus.Counter
    private let asked: Prometheus.Counter
    private let cacheHits: Prometheus.Counter
    private let cacheMisses: Prometheus.Counter
    /// Registry series by label value, made as values are first folded in.
    private let commandSeries = Mutex<[String: Prometheus.Counter]>([:])
    private let errorSeries = Mutex<[String: Prometheus.Counter]>([:])
    /// Distinct command names and error kinds a recorder keeps apart.
    static let distinctLimit = 64

    public init(_ metrics: ServiceMetrics) {
        self.metrics = metrics
        latency = metrics.histogram("redis_command_duration_seconds",
                                    "Redis command latency, from the connection taking the command to its reply.", buckets: .calls)
        reconnects = metrics.counter("redis_reconnects_total", "Redis connections that were lost and made again.")
        let redirectHelp = "Commands a Redis Cluster node redirected (MOVED: the slot moved; ASK: it is migrating)."
        moved = metrics.counter("redis_cluster_redirects_total", redirectHelp, [("type", "moved")])
        asked = metrics.counter("redis_cluster_redirects_total", redirectHelp, [("type", "ask")])
        let cacheHelp = "Reads through the Redis client's cache: answered from it (hit) or run on Redis (miss)."
        cacheHits = metrics.counter("redis_cache_reads_total", cacheHelp, [("outcome", "hit")])
        cacheMisses = metrics.counter("redis_cache_reads_total", cacheHelp, [("outcome", "miss")])
        metrics.addCollector { [self] in
            for counts in await recorders.take({ $0.take() }) { fold(counts) }
        }
    }

    public func makeRecorder(loop: EventLoop) -> any RedisRecorder {
        let recorder = Recorder()
        recorders.add(recorder, loop: loop)
        return recorder
    }

    private func fold(_ counts: Counts) {
        for (name, count) in counts.commands where count > 0 {
            series(name, in: commandSeries, "redis_commands_total", "Redis commands sent, by command.", label: "command")
                .increment(by: Int64(count))
        }
        for (kind, count) in counts.errors where count > 0 {
            series(kind, in: errorSeries, "redis_command_errors_total",
                   "Redis commands that failed: an error reply (by its first word), unavailable or timeout.", label: "kind")
                .increment(by: Int64(count))
        }
        counts.latency.fold(slot: 0, into: latency)
        if counts.reconnects > 0 { reconnects.increment(by: Int64(counts.reconnects)) }
        if counts.moved > 0 { moved.increment(by: Int64(counts.moved)) }
        if counts.asked > 0 { asked.increment(by: Int64(counts.asked)) }
        if counts.cacheHits > 0 { cacheHits.increment(by: Int64(counts.cacheHits)) }
        if counts.cacheMisses > 0 { cacheMisses.increment(by: Int64(counts.cacheMisses)) }
    }

    private func series(_ value: String, in cache: borrowing Mutex<[String: Prometheus.Counter]>, _ name: String, _ help: String,
                        label: String) -> Prometheus.Counter {
        cache.withLock { cache in
            if let counter = cache[value] { return counter }
            let counter = metrics.counter(name, help, [(label, value)])
            cache[value] = counter
            return counter
        }
    }

    struct Counts: Sendable {
        var commands: [(String, Int)] = []
        var errors: [(String, Int)] = []
        var latency = HistogramTally(slots: 1, buckets: .calls)
        var reconnects = 0
        var moved = 0
        var asked = 0
        var cacheHits = 0
        var cacheMisses = 0
    }

    /// Counts in plain memory; its loop's thread only (without exclusivity checks, as the gRPC
    /// server's recorder).
    final class Recorder: RedisRecorder {
        /// Slots by name, and each slot's count since the last take.
        @exclusivity(unchecked) private var commandSlots: [[UInt8]: Int] = [:]
        @exclusivity(unchecked) private var commandNames: [String] = []
        @exclusivity(unchecked) private var commandCounts: [Int] = []
        @exclusivity(unchecked) private var errorSlots: [String: Int] = [:]
        @exclusivity(unchecked) private var errorKinds: [String] = []
        @exclusivity(unchecked) private var errorCounts: [Int] = []
        @exclusivity(unchecked) private var latency = HistogramTally(slots: 1, buckets: .calls)
        private var reconnects = 0
        private var moved = 0
        private var asked = 0
        private var cacheHits = 0
        private var cacheMisses = 0

        func completed(_ name: [UInt8], _ outcome: RedisCommandOutcome, duration: Duration?) {
            // A command never sent is an error, not a command.
            if let duration {
                let slot: Int
                if let known = commandSlots[name] {
                    slot = known
                } else if commandNames.count < RedisMetrics.distinctLimit {
                    slot = Self.intern(String(decoding: name, as: UTF8.self).uppercased(), &commandNames, &commandCounts)
                    commandSlots[name] = slot
                } else {
                    slot = Self.intern("other", &commandNames, &commandCounts)
                }
                commandCounts[slot] += 1
                latency.record(slot: 0, duration)
            }
            switch outcome {
            case .reply: break
            case .errorReply(let word): countError(String(word))
            case .failure(let kind): countError(Self.label(kind))
            }
        }

        func reconnected() { reconnects += 1 }
        func redirected(ask: Bool) { if ask { asked += 1 } else { moved += 1 } }
        func cacheRead(hit: Bool) { if hit { cacheHits += 1 } else { cacheMisses += 1 } }

        private func countError(_ kind: String) {
            let slot: Int
            if let known = errorSlots[kind] {
                slot = known
            } else if errorKinds.count < RedisMetrics.distinctLimit {
                slot = Self.intern(kind, &errorKinds, &errorCounts)
                errorSlots[kind] = slot
            } else {
                slot = Self.intern("other", &errorKinds, &errorCounts)
            }
            errorCounts[slot] += 1
        }

        /// The slot of `label`: the existing one, else a new one.
        private static func intern(_ label: String, _ labels: inout [String], _ counts: inout [Int]) -> Int {
            if let existing = labels.firstIndex(of: label) { return existing }
            labels.append(label)
            counts.append(0)
            return labels.count - 1
        }

        private static func label(_ kind: RedisError.Kind) -> String {
            switch kind {
            case .unavailable: "unavailable"
            case .timeout: "timeout"
            case .server: "server"
            case .authentication: "authentication"
            case .notReplicated: "not_replicated"
            }
        }

        func take() -> Counts {
            defer {
                for index in commandCounts.indices { commandCounts[index] = 0 }
                for index in errorCounts.indices { errorCounts[index] = 0 }
                latency = HistogramTally(slots: 1, buckets: .calls)
                (reconnects, moved, asked, cacheHits, cacheMisses) = (0, 0, 0, 0, 0)
            }
            return Counts(commands: Array(zip(commandNames, commandCounts)), errors: Array(zip(errorKinds, errorCounts)),
                          latency: latency, reconnects: reconnects, moved: moved, asked: asked,
                          cacheHits: cacheHits, cacheMisses: cacheMisses)
        }
    }
}
