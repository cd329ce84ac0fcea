// Applies the platform's events to one service's state through a Redis Streams consumer group:
// the replicas of a service share the work, each event is applied at least once, and nothing is
// lost while a replica, the service or Redis is down.
//
// Each service is one group, named after the service, on every partition's stream
// (OrderPartition); each replica is one consumer of each, with a name of its own. Per partition a
// replica reads new entries with a blocking `XREADGROUP ... >` on a connection of its own (so no
// timer polls a stream, and in a cluster each read goes to its partition's node), applies a batch
// (all of one partition, so its functions stay on one slot) and acknowledges it (XACK). What it
// had read but not applied when it failed stays pending under its name: it applies those first
// when Redis is back (with whatever is new, in the same batch), and another replica claims them
// (XAUTOCLAIM) once they have been idle for `claimIdle`, so the events of a replica that crashed
// are applied within `claimIdle + claimInterval` (about 6 s). A group starts at the beginning of
// the stream: applying is idempotent, so a new group only costs time.
//
// A batch that fails for a reason other than Redis being away is applied again one event at a
// time. An event that fails while others of the batch succeed is set aside in the partition's
// dead letters and acknowledged, so one event no apply can take never stops its partition. When
// none succeeds (a store that fails everything: a broken build, a missing permission), nothing is
// dropped: the entries stay pending and are tried again.
//
// Replicas apply their batches concurrently, so the events of one order may be applied out of
// order. The projections make that harmless instead of forbidding it: each keeps the id of the
// last event it applied to an aggregate and skips older ones, and each event carries the full
// state it announces (a stage carries its driver too), so skipping an older event loses nothing.
// The order in which events reach a projection never changes where it ends.
//
// `catchUp(partition)` is read-your-writes: it applies every event of the partition (or of all of
// them) written before the call, whoever's they are, without acknowledging them (their consumer
// still does), by reading the stream from the group's oldest unacknowledged entry (or after the
// group's last delivered one when none is pending).
// Services use it where a client expects to see a change it just made through another service
// (the delivery service learning of an order accepted a moment ago; the order service when
// GetOrderStatus finds more events unapplied than its read applies itself). Catch-ups of a
// partition are coalesced: whoever asks while one runs waits for the next, which starts after the
// request.
import CoreMetrics
import Logging
import RedisClient
import RPCCore
import Synchronization

/// What a service needs of its consumer to read its own writes: apply every event written so far.
public protocol EventCatchUp: Sendable {
    /// Applies every event of `partition` (nil: of every partition) written before this call.
    func catchUp(_ partition: OrderPartition?) async throws(RPCError)
}

/// Consumes the event stream as one replica of a service's consumer group.
public actor EventConsumer: EventCatchUp {
    /// Applies a batch of events of one partition; must be idempotent and must not depend on the
    /// order of events.
    public typealias Apply = @Sendable ([PlatformEvent], OrderPartition) async throws(RPCError) -> Void

    /// The group, shared by the replicas of a service.
    public nonisolated let group: String
    /// This replica's name in the group: unique per process start.
    public nonisolated let consumer: String
    private let redis: RedisClient
    private let apply: Apply
    private let logger: Logger
    /// Per partition index.
    private var catchUps = Array(repeating: CatchUps(), count: OrderPartition.count)
    private var listeners: [Task<Void, Never>] = []

    /// The catch-ups of one partition: asked for, done, and who waits for which.
    private struct CatchUps {
        var requested = 0
        var completed = 0
        var waiters: [(ticket: Int, continuation: CheckedContinuation<Result<Void, RPCError>, Never>)] = []
        var working = false
    }

    /// Entries read, claimed or caught up on per command.
    static let batchSize = 256
    /// How long one blocking read waits before it is repeated (below the client's command timeout).
    static let blockMilliseconds = 1_000
    /// How long an entry stays pending with a consumer before another one claims it.
    public static let claimIdle: Duration = .seconds(5)
    /// How often a replica looks for entries to claim.
    static let claimInterval: Duration = .seconds(1)
    /// A consumer with nothing pending, idle this long (a replica that is gone), is removed.
    static let forgetIdle: Duration = .seconds(3_600)

    /// `group` names the service's consumer group; every replica of the service uses the same.
    public init(group: String, redis: RedisClient, logger: Logger, apply: @escaping Apply) {
        self.group = group
        consumer = "replica-" + String(UInt64.random(in: .min ... .max), radix: 16)
        self.redis = redis
        self.apply = apply
        self.logger = logger
    }

    /// Consumes every partition until `stop`, retrying while Redis is away.
    public func start() {
        guard listeners.isEmpty else { return }
        listeners = OrderPartition.all.map { partition in
            Task { [group, consumer, redis, logger, apply] in
                let connection = redis.makeBlockingConnection()
                defer { connection.close() }
                let reader = GroupReader(group: group, consumer: consumer, partition: partition, redis: redis,
                                         connection: connection, logger: logger, apply: apply)
                var delay: Duration = .milliseconds(50)
                while !Task.isCancelled {
                    do throws(RedisGroupError) {
                        try await reader.step()
                        delay = .milliseconds(50)
                    } catch {
                        if Task.isCancelled { break }
                        logger.warning("consuming events failed, retrying",
                                       metadata: ["group": "\(group)", "partition": "\(partition)", "error": "\(error)"])
                        reader.failed()
                        try? await Task.sleep(for: delay)
                        delay = min(delay * 2, .seconds(2))
                    }
                }
            }
        }
    }

    /// Stops consuming. Waits a little longer than a blocking read for the reads in flight and
    /// applies what they return, so a graceful stop leaves nothing pending for another replica to
    /// claim; past that (Redis unreachable, its client closed) it stops waiting.
    public func stop() async {
        let stopping = listeners
        listeners = []
        for listener in stopping { listener.cancel() }
        let finished = Atomic<Bool>(false)
        Task {
            for listener in stopping { await listener.value }
            finished.store(true, ordering: .releasing)
        }
        let deadline = ContinuousClock.now + .milliseconds(Self.blockMilliseconds + 500)
        while !finished.load(ordering: .acquiring), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Records the group's lag as gauges (swift-metrics; the service's /metrics shows them):
    /// `platform_event_consumer_lag_events` (entries not yet delivered to the group, summed over
    /// the partitions), `platform_event_consumer_lag_seconds` (the age of the oldest of them) and
    /// `platform_event_pending_entries` (delivered, not yet acknowledged). Every replica reports
    /// the same group-wide figures. When Redis cannot answer for every partition, or cannot tell
    /// a lag (XINFO reports none after entries were deleted), the gauges keep their last values:
    /// a stale figure, never a made-up zero.
    public nonisolated func recordLag() async {
        var (lag, oldest, pending) = (0, Int64.max, 0)
        var lagKnown = true
        let now = unixMilliseconds()
        for partition in OrderPartition.all {
            let groups: [RedisReply]
            do {
                groups = try await redis.send(["XINFO", "GROUPS", partition.stream]).array ?? []
            } catch {
                logger.debug("cannot read the consumer group's lag", metadata: ["partition": "\(partition)", "error": "\(error)"])
                return
            }
            for entry in groups {
                guard let fields = entry.array else { continue }
                var values: [String: RedisReply] = [:]
                for index in stride(from: 0, to: fields.count - 1, by: 2) {
                    if let name = fields[index].string { values[name] = fields[index + 1] }
                }
                guard values["name"]?.string == group else { continue }
                pending += Int(values["pending"]?.int ?? 0)
                guard let behind = values["lag"]?.int.map(Int.init) else {
                    lagKnown = false
                    continue
                }
                lag += behind
                guard behind > 0, let delivered = values["last-delivered-id"]?.string else { continue }
                do {
                    let next = try await redis.send(["XRANGE", partition.stream, "(" + delivered, "+", "COUNT", "1"]).array?.first?.array
                    if let id = next?.first?.string.flatMap(StreamID.init) { oldest = min(oldest, Int64(id.milliseconds)) }
                } catch {
                    return
                }
            }
        }
        let dimensions = [("group", group)]
        Gauge(label: "platform_event_pending_entries", dimensions: dimensions).record(pending)
        guard lagKnown else { return }
        Gauge(label: "platform_event_consumer_lag_events", dimensions: dimensions).record(lag)
        Gauge(label: "platform_event_consumer_lag_seconds", dimensions: dimensions)
            .record(oldest == .max ? 0 : Double(max(0, now - oldest)) / 1000)
    }

    /// Applies every event of `partition` (nil: of every partition) written before this call.
    /// Throws UNAVAILABLE when Redis is down.
    public func catchUp(_ partition: OrderPartition? = nil) async throws(RPCError) {
        guard let partition else {
            let failure = await withTaskGroup(of: RPCError?.self) { group -> RPCError? in
                for partition in OrderPartition.all {
                    group.addTask { () async -> RPCError? in
                        do throws(RPCError) { try await self.catchUp(partition) } catch { return error }
                        return nil
                    }
                }
                var failure: RPCError?
                while let result = await group.next() { failure = failure ?? result }
                return failure
            }
            if let failure { throw failure }
            return
        }
        let index = partition.index
        catchUps[index].requested += 1
        let ticket = catchUps[index].requested
        if !catchUps[index].working {
            catchUps[index].working = true
            // Detached: the work serves every caller waiting on it, so it must not run in
            // (and log under) the trace of the one who happened to start it.
            Task.detached { await self.work(partition) }
        }
        let result = await withCheckedContinuation { continuation in
            catchUps[index].waiters.append((ticket, continuation))
        }
        try result.get()
    }

    private func work(_ partition: OrderPartition) async {
        let index = partition.index
        while catchUps[index].completed < catchUps[index].requested {
            let target = catchUps[index].requested
            let result: Result<Void, RPCError>
            do throws(RPCError) {
                try await readThrough(partition)
                result = .success(())
            } catch {
                logger.warning("catching up on events failed", metadata: ["group": "\(group)", "partition": "\(partition)", "error": "\(error)"])
                result = .failure(error)
            }
            catchUps[index].completed = target
            let done = catchUps[index].waiters.filter { $0.ticket <= target }
            catchUps[index].waiters.removeAll { $0.ticket <= target }
            for waiter in done { waiter.continuation.resume(returning: result) }
        }
        catchUps[index].working = false
    }

    /// Applies the entries of the partition the group has not acknowledged yet, up to the
    /// stream's end as it was when the last (short) batch was read.
    private func readThrough(_ partition: OrderPartition) async throws(RPCError) {
        var after = ""
        while true {
            let reply = try await redis.script(Self.unapplied, keys: [partition.stream],
                                               arguments: [group, after, String(Self.batchSize)])
            let entries = StreamEntries(range: reply)
            if !entries.events.isEmpty {
                // An event rejected where others apply is the consumer's to set aside; a catch-up
                // goes past it.
                let outcome = await Self.applyEach(entries.events, in: partition, with: apply)
                if let stall = outcome.stall { throw stall }
            }
            guard entries.ids.count == Self.batchSize, let last = entries.ids.last else { return }
            after = last
        }
    }
}

extension EventConsumer {
    /// What applying a batch came to: `stall` when it must be tried again later (Redis away, or
    /// not one event could be applied: a store that fails everything, never a reason to drop
    /// events); otherwise the events that failed while others in the batch succeeded.
    struct ApplyOutcome {
        var stall: RPCError?
        var rejected: [(PlatformEvent, RPCError)] = []
    }

    /// Applies the batch; when that fails for a reason other than Redis being away, applies its
    /// events one at a time, so that one event no apply can take is told apart from the rest.
    static func applyEach(_ events: [PlatformEvent], in partition: OrderPartition, with apply: Apply) async -> ApplyOutcome {
        do throws(RPCError) {
            try await apply(events, partition)
            return ApplyOutcome()
        } catch where error.code == .unavailable {
            return ApplyOutcome(stall: error)
        } catch {
            guard events.count > 1 else { return ApplyOutcome(stall: error) }
            var outcome = ApplyOutcome()
            var applied = 0
            for event in events {
                do throws(RPCError) {
                    try await apply([event], partition)
                    applied += 1
                } catch where error.code == .unavailable {
                    return ApplyOutcome(stall: error)
                } catch {
                    outcome.rejected.append((event, error))
                }
            }
            if applied == 0 { return ApplyOutcome(stall: error) }
            return outcome
        }
    }

    /// A catch-up's next batch (EventLua.unappliedRange).
    static let unapplied = LuaLibrary(module: "events", helpers: [EventLua.unapplied],
                                      functions: ["unapplied_range": EventLua.unappliedRange],
                                      readOnly: ["unapplied_range"]).function("unapplied_range")
}

/// A Redis failure while consuming, or an apply that failed (its entries stay pending).
enum RedisGroupError: Error, CustomStringConvertible {
    case redis(RedisError)
    case apply(RPCError)

    var description: String {
        switch self {
        case .redis(let error): "\(error)"
        case .apply(let error): "applying events: \(error.message)"
        }
    }
}

/// The entries of an XRANGE, XREADGROUP or XAUTOCLAIM reply: every id (to acknowledge) and the
/// platform events among them, in order.
struct StreamEntries {
    var ids: [String] = []
    var events: [PlatformEvent] = []

    mutating func append(_ other: StreamEntries) {
        ids += other.ids
        events += other.events
    }

    /// From a list of `[id, [field, value, ...]]` (a deleted entry has no fields).
    init(range reply: RedisReply) {
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { continue }
            ids.append(id)
            if let fields = parts[1].array, let event = PlatformEvent(entryID: id, fields: fields.map(\.string)) {
                events.append(event)
            }
        }
    }
}

/// One replica's side of the group on one partition's stream, driven by a listener task of the
/// consumer (one step at a time):
/// create the group when missing, apply what is pending under its own name, read new entries,
/// claim the entries of consumers that went quiet, forget consumers long gone.
private final class GroupReader {
    let group: String
    let consumer: String
    let partition: OrderPartition
    let stream: String
    let redis: RedisClient
    let connection: RedisBlockingConnection
    let logger: Logger
    let apply: EventConsumer.Apply
    /// Entries of its own may be pending (at start, after a failure): read those before new ones.
    var recovering = true
    var groupExists = false
    var lastClaim = ContinuousClock.now
    var claimsSinceCleanup = 0

    init(group: String, consumer: String, partition: OrderPartition, redis: RedisClient, connection: RedisBlockingConnection,
         logger: Logger, apply: @escaping EventConsumer.Apply) {
        self.logger = logger
        self.group = group
        self.consumer = consumer
        self.partition = partition
        stream = partition.stream
        self.redis = redis
        self.connection = connection
        self.apply = apply
    }

    func failed() { recovering = true }

    func step() async throws(RedisGroupError) {
        if !groupExists { try await createGroup() }
        let reply: RedisReply
        do {
            reply = try await connection.send(recovering
                ? ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(EventConsumer.batchSize), "STREAMS", stream, "0"]
                : ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(EventConsumer.batchSize),
                   "BLOCK", String(EventConsumer.blockMilliseconds), "STREAMS", stream, ">"])
        } catch {
            // The group went away (deleted, or a failover to a replica that never had it).
            if case .server(let message) = error.kind, message.hasPrefix("NOGROUP") { groupExists = false }
            throw .redis(error)
        }
        var entries = StreamEntries(range: reply.array?.first?.array?.last ?? .null)
        if recovering, entries.ids.isEmpty { recovering = false }
        if recovering {
            // Newer entries too (without waiting): with them, an event that fails where others
            // succeed is told apart from a store that fails everything.
            do {
                let newer = try await connection.send(["XREADGROUP", "GROUP", group, consumer, "COUNT", String(EventConsumer.batchSize),
                                                       "STREAMS", stream, ">"])
                entries.append(StreamEntries(range: newer.array?.first?.array?.last ?? .null))
            } catch { throw .redis(error) }
        }
        try await applyAndAcknowledge(entries)
        if ContinuousClock.now - lastClaim >= EventConsumer.claimInterval {
            try await claim()
            lastClaim = .now
        }
    }

    private func createGroup() async throws(RedisGroupError) {
        do {
            _ = try await redis.send(["XGROUP", "CREATE", stream, group, "0", "MKSTREAM"], waitForReplicas: true)
        } catch {
            guard case .server(let message) = error.kind, message.hasPrefix("BUSYGROUP") else { throw .redis(error) }
        }
        groupExists = true
    }

    private func applyAndAcknowledge(_ entries: StreamEntries) async throws(RedisGroupError) {
        guard !entries.ids.isEmpty else { return }
        if !entries.events.isEmpty {
            let outcome = await EventConsumer.applyEach(entries.events, in: partition, with: apply)
            if let stall = outcome.stall { throw .apply(stall) }  // the entries stay pending, to be tried again
            for (event, error) in outcome.rejected { try await setAside(event, error) }
        }
        // Unacknowledged entries are only applied again: no WAIT needed.
        do { _ = try await redis.send(["XACK", stream, group] + entries.ids) } catch { throw .redis(error) }
    }

    /// Keeps an event no apply could take in the partition's dead letters (`OrderPartition.deadLetters`).
    private func setAside(_ event: PlatformEvent, _ error: RPCError) async throws(RedisGroupError) {
        logger.error("an event could not be applied; set aside as a dead letter",
                     metadata: ["group": "\(group)", "event": "\(event)", "id": "\(event.id?.description ?? "")", "error": "\(error)"])
        do {
            _ = try await redis.send(["XADD", partition.deadLetters, "MAXLEN", "~", "10000", "*", "id", event.id?.description ?? "",
                                      "group", group, "event", event.description, "error", error.message], waitForReplicas: true)
        } catch { throw .redis(error) }
    }

    /// Takes over the entries other consumers have held for longer than `claimIdle`, and now and
    /// then removes consumers that hold nothing and have been idle for `forgetIdle`.
    private func claim() async throws(RedisGroupError) {
        let idle = String(EventConsumer.claimIdle.milliseconds)
        var cursor = "0-0"
        repeat {
            let reply: RedisReply
            do {
                reply = try await connection.send(["XAUTOCLAIM", stream, group, consumer, idle, cursor,
                                                   "COUNT", String(EventConsumer.batchSize)])
            } catch { throw .redis(error) }
            guard let parts = reply.array, parts.count >= 2, let next = parts[0].string else { return }
            try await applyAndAcknowledge(StreamEntries(range: parts[1]))
            // Entries deleted from the stream while pending cannot be applied: drop them.
            let deleted = (parts.count > 2 ? parts[2].array ?? [] : []).compactMap(\.string)
            if !deleted.isEmpty {
                do { _ = try await redis.send(["XACK", stream, group] + deleted) } catch { throw .redis(error) }
            }
            cursor = next
        } while cursor != "0-0"
        claimsSinceCleanup += 1
        if claimsSinceCleanup >= 60 {
            claimsSinceCleanup = 0
            try await forgetIdleConsumers()
        }
    }

    private func forgetIdleConsumers() async throws(RedisGroupError) {
        let consumers: RedisReply
        do { consumers = try await connection.send(["XINFO", "CONSUMERS", stream, group]) } catch { throw .redis(error) }
        for info in consumers.array ?? [] {
            var fields: [String: RedisReply] = [:]
            let flat = info.array ?? []
            for index in stride(from: 0, to: flat.count - 1, by: 2) {
                if let name = flat[index].string { fields[name] = flat[index + 1] }
            }
            guard let name = fields["name"]?.string, name != consumer, fields["pending"]?.int == 0,
                  let idle = fields["idle"]?.int, idle >= EventConsumer.forgetIdle.milliseconds else { continue }
            do { _ = try await redis.send(["XGROUP", "DELCONSUMER", stream, group, name]) } catch { throw .redis(error) }
        }
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 { components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000 }
}
