// Applies the platform's events to one service's state: every event once at least, in stream
// order, whatever was missed while the service or Redis was down.
//
// The stream (PlatformEvents.stream) is the source of truth; Pub/Sub only rings the bell. A
// consumer keeps its position (the last stream id it applied) in Redis under its own name, so a
// restarted service, or a second replica, continues where the service left off. Catching up reads
// the stream after that position in batches, applies each batch (in one script call, so a burst of
// events costs a few round trips, not one each), then saves the position; an
// event applied twice (a crash between apply and save, two replicas) is harmless because every
// apply is idempotent.
//
// The bell is a blocking read of the stream itself (`XREAD BLOCK` from the last entry seen, on a
// connection of its own): it returns as soon as an entry is appended, and a read that times out is
// simply repeated, so no timer polls the stream and no Pub/Sub connection can die silently
// between a service and its events. A catch-up runs on start and whenever the read returns
// entries; the saved position only moves forwards (a Lua compare), so replicas cannot undo each
// other. Catch-ups are coalesced: whoever asks while one runs waits for the next one, which starts after
// the request and so sees every event written before it. Services use that for read-your-writes
// (the delivery service before judging an assignment; the order service when GetOrderStatus finds
// more events pending than its script applies itself).
import Logging
import RedisClient
import RPCCore

/// Reads the event stream from a saved position and hands the events, in order, to `apply`.
public actor EventConsumer {
    /// Applies a batch of events in stream order; must be idempotent.
    public typealias Apply = @Sendable ([PlatformEvent]) async throws(RPCError) -> Void

    private let redis: RedisClient
    private let positionKey: String
    private let apply: Apply
    private let logger: Logger
    private var position: String?
    private var requested = 0
    private var completed = 0
    private var waiters: [(ticket: Int, continuation: CheckedContinuation<Result<Void, RPCError>, Never>)] = []
    private var working = false
    private var listener: Task<Void, Never>?
    private var retryScheduled = false
    /// The pause before a failed catch-up is tried again.
    static let retryDelay: Duration = .milliseconds(200)
    /// How long one blocking read waits before it is repeated (below the client's command timeout).
    static let blockMilliseconds = 1_000

    /// Where the consumer called `name` keeps its position (the id of the last entry applied).
    public static func positionKey(_ name: String) -> String { "consumer:\(name):position" }

    /// `name` identifies the consumer's saved position; replicas of one service share it.
    public init(name: String, redis: RedisClient, logger: Logger, apply: @escaping Apply) {
        self.redis = redis
        self.positionKey = Self.positionKey(name)
        self.apply = apply
        self.logger = logger
    }

    /// Catches up now and whenever the stream grows, until `stop`; retries while Redis is away.
    public func start() {
        guard listener == nil else { return }
        listener = Task { [redis, logger] in
            let connection = redis.makeBlockingConnection()
            defer { connection.close() }
            var seen: String?
            var delay: Duration = .milliseconds(50)
            while !Task.isCancelled {
                do throws(RedisError) {
                    guard let last = seen else {
                        // Note the stream's end first: whatever comes after it wakes the read below,
                        // and the catch-up asked for next covers everything up to it.
                        let tail = try await connection.send(["XREVRANGE", PlatformEvents.stream, "+", "-", "COUNT", "1"])
                        seen = tail.array?.first?.array?.first?.string ?? "0-0"
                        if Task.isCancelled { break }
                        self.requestCatchUp()
                        continue
                    }
                    let reply = try await connection.send([
                        "XREAD", "COUNT", "256", "BLOCK", String(Self.blockMilliseconds), "STREAMS", PlatformEvents.stream, last,
                    ])
                    delay = .milliseconds(50)
                    guard let entries = reply.array?.first?.array?.last?.array, let newest = entries.last?.array?.first?.string else { continue }
                    seen = newest
                    // Ring without waiting: a burst of entries while one catch-up runs costs a
                    // single further read of the stream, not one per entry. Not after `stop`.
                    if Task.isCancelled { break }
                    self.requestCatchUp()
                } catch {
                    if Task.isCancelled { break }
                    logger.warning("waiting for events failed, retrying", metadata: ["error": "\(error)"])
                    // Whatever came meanwhile is found by the catch-up after the next tail read.
                    seen = nil
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                }
            }
        }
    }

    public func stop() {
        listener?.cancel()
        listener = nil
    }

    /// Applies every event written before this call. Throws UNAVAILABLE when Redis is down.
    public func catchUp() async throws(RPCError) {
        let ticket = requestCatchUp()
        let result = await withCheckedContinuation { continuation in
            waiters.append((ticket, continuation))
        }
        try result.get()
    }

    /// Asks for a catch-up that starts after this call; returns its ticket.
    @discardableResult
    private func requestCatchUp() -> Int {
        requested += 1
        if !working {
            working = true
            Task { await self.work() }
        }
        return requested
    }

    private func work() async {
        while completed < requested {
            let target = requested
            let result: Result<Void, RPCError>
            do throws(RPCError) {
                try await readStream()
                result = .success(())
            } catch {
                logger.warning("catching up on events failed", metadata: ["error": "\(error)"])
                result = .failure(error)
                // Read the saved position again next time: after a failover it may be older.
                position = nil
                scheduleRetry()
            }
            completed = target
            let done = waiters.filter { $0.ticket <= target }
            waiters.removeAll { $0.ticket <= target }
            for waiter in done { waiter.continuation.resume(returning: result) }
        }
        working = false
    }

    /// After a failed catch-up, while started: the bell has already moved past the entries that
    /// were not applied, so nothing else would ask again until the next event.
    private func scheduleRetry() {
        guard listener != nil, !retryScheduled else { return }
        retryScheduled = true
        Task {
            try? await Task.sleep(for: Self.retryDelay)
            self.retryNow()
        }
    }

    private func retryNow() {
        retryScheduled = false
        if listener != nil { requestCatchUp() }
    }

    private func readStream() async throws(RPCError) {
        if position == nil {
            position = try await redis.command(["GET", positionKey]).string ?? "0"
        }
        while true {
            let start = position == "0" ? "-" : "(\(position!)"
            let reply = try await redis.command(["XRANGE", PlatformEvents.stream, start, "+", "COUNT", "256"])
            guard let entries = reply.array, !entries.isEmpty else { return }
            var events: [PlatformEvent] = []
            var last = position!
            for entry in entries {
                guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { continue }
                if let event = PlatformEvent(entryID: id, fields: (parts[1].array ?? []).map(\.string)) {
                    events.append(event)
                }
                last = id
            }
            if !events.isEmpty { try await apply(events) }
            // Saved only forwards: a replica that lags must not move the shared position back,
            // and one that is behind jumps to where the others already are.
            position = try await redis.change(Self.savePosition, keys: [positionKey], arguments: [last]).string ?? last
        }
    }
}

extension EventConsumer {
    /// KEYS[1]: the position key; ARGV[1]: a stream id. Stores it unless the stored id is newer;
    /// returns the stored id.
    static let savePosition = """
        \(eventLua)
        local current = redis.call('GET', KEYS[1])
        if not current or older(current, ARGV[1]) then
            redis.call('SET', KEYS[1], ARGV[1])
            return ARGV[1]
        end
        return current
        """
}
