// Client-side caching of read functions' replies (Redis's CLIENT TRACKING), for reads that must
// still see every write made before they arrived. Loop-confined, on the client's loop.
//
// Design: two connections of their own, opened by the first cached read. The listener runs
// CLIENT ID, then SUBSCRIBEs to `__redis__:invalidate`; the reads connection turns tracking on,
// redirected to the listener, and runs every cache fill. Redis then remembers each key a fill's
// function read, and when one of them changes (a write by any client, an expiry, an eviction) it
// sends the key's name to the listener once; FLUSHALL sends a null list. An entry is dropped as
// soon as one of its keys is named, so an entry holds what the function answered while nothing
// it read has changed since.
//
// That alone is only eventually fresh: the invalidation of a write another client just made
// may still be on its way when a read arrives. So a hit is answered only after a barrier: the
// listener SUBSCRIBEs again (a no-op that Redis confirms in order on that connection), and the
// entry is looked up once more when the confirmation comes. Redis ran the barrier after every
// write that had finished before the read arrived, and queued those writes' invalidations on
// the same connection ahead of the confirmation, so an entry still there is fresh. One barrier
// is in flight at a time and every hit that arrives meanwhile waits for the next one: a read
// must wait for a barrier sent after it arrived. Under load, one barrier serves many reads.
//
// A fill can race an invalidation: its reply (on the reads connection) and the invalidation
// (on the listener) arrive in either order. Each key a fill in flight depends on has an epoch
// that invalidations of it raise; a fill whose keys' epochs changed answers its caller but is
// not kept.
//
// Losing either connection empties the cache (invalidations may have been missed) and turns it
// off until both are back, tracking redirected to the new listener; meanwhile reads go
// uncached. Both must reach the same server process (compared by INFO's run_id: behind a proxy
// one address can lead to two servers while one is replaced); a server that refuses tracking
// turns the cache off for good. Only a standalone deployment is cached: with Sentinel or a
// cluster, the connections follow failovers on their own, and keeping two of them on one node
// through every failover is left for later.
import EventLoop

/// What a read through the cache came to: an answer, or "run it uncached" (the cache is off
/// or lost its connections, or the node lacks the function: the caller's plain call loads it).
enum CachedRead {
    case answered(Result<RedisReply, RedisError>)
    case uncached
}

/// A function call whose reply can be cached: the same call answers the same while none of
/// its keys changed.
struct CachedCall: Hashable {
    let function: String
    let keys: [String]
    let arguments: [String]
}

/// A read waiting for its answer.
struct CacheRead {
    let call: CachedCall
    /// Whether a reply may be kept (a function's "come back later" answers must not be).
    let keep: @Sendable (RedisReply) -> Bool
    let answer: UnsafeContinuation<CachedRead, Never>
}

/// Replies of read functions kept while none of the keys they read has changed.
final class ReadCache {
    static let invalidationChannel = "__redis__:invalidate"

    private let loop: EventLoop
    private let capacity: Int
    private let commandTimeout: Duration
    private let listener: ConnectionManager
    private let reads: ConnectionManager
    private let recorder: (any RedisRecorder)?

    private var entries: [CachedCall: RedisReply] = [:]
    /// For each key, the entries whose function read it.
    private var dependents: [String: Set<CachedCall>] = [:]
    /// For each key a fill in flight read: how many fills, and its invalidations so far.
    private var watched: [String: (fills: Int, epoch: UInt64)] = [:]
    /// Raised whenever the whole cache is emptied.
    private var flushes: UInt64 = 0

    /// The listener's client id, once CLIENT ID answered on its current connection.
    private var listenerID: Int64?
    /// The run id of the server the listener is connected to.
    private var listenerServer: String?
    /// The listener sent its first SUBSCRIBE on this connection and awaits the confirmation.
    private var subscribing = false
    /// Raised each time the listener is subscribed on a new connection.
    private var session = 0
    private var listening = false
    /// The session and reads connection generation tracking was turned on for.
    private var tracking: (session: Int, generation: Int)?
    private var enablingTracking = false
    /// Set while waiting to connect both again (they had reached different servers).
    private var retryTimer: TimerID?
    private let retryPause: Duration

    private var waitingForBarrier: [CacheRead] = []
    private var atBarrier: [CacheRead]?
    private var barrierTimer: TimerID?
    private var isStarted = false
    private var isClosed = false

    init(configuration: RedisConfiguration, loop: EventLoop, recorder: (any RedisRecorder)?) {
        self.loop = loop
        capacity = configuration.readCacheCapacity
        commandTimeout = configuration.commandTimeout
        retryPause = configuration.reconnectMaximumDelay
        self.recorder = recorder
        listener = ConnectionManager(configuration: configuration, loop: loop)
        reads = ConnectionManager(configuration: configuration, loop: loop, recorder: recorder)
        listener.events = ConnectionEvents(
            ready: { [unowned self] in listenerReady() },
            failed: { [unowned self] _, _ in listenerLost() },
            push: { [unowned self] reply in listenerReceived(reply) }
        )
        reads.events = ConnectionEvents(
            ready: { [unowned self] in enableTracking() },
            failed: { [unowned self] _, _ in readsLost() }
        )
    }

    private var isReady: Bool {
        guard listening, let tracking else { return false }
        return tracking.session == session && tracking.generation == reads.generation
    }

    func close() {
        if let retryTimer { loop.cancel(retryTimer) }
        retryTimer = nil
        turnOff()
    }

    // MARK: - Reads

    /// Answers `read`; the first read connects the cache (and goes uncached itself).
    func read(_ read: CacheRead) {
        if !isStarted, !isClosed {
            isStarted = true
            listener.start()
            reads.start()
        }
        guard isReady else { return read.answer.resume(returning: .uncached) }
        guard entries[read.call] != nil else {
            recorder?.cacheRead(hit: false)
            return fill(read)
        }
        waitingForBarrier.append(read)
        if atBarrier == nil { sendBarrier() }
    }

    private func sendBarrier() {
        atBarrier = waitingForBarrier
        waitingForBarrier = []
        listener.sendUnanswered(Self.subscribe)
        let timeout = commandTimeout
        barrierTimer = loop.schedule(after: timeout) { [unowned self] in
            barrierTimer = nil
            listener.reset(reason: "no confirmation of a cache barrier within \(timeout)")
        }
    }

    /// Every write that finished before these reads arrived has had its invalidations here.
    private func barrierPassed() {
        if let barrierTimer { loop.cancel(barrierTimer) }
        barrierTimer = nil
        let passed = atBarrier ?? []
        atBarrier = nil
        for read in passed {
            if let reply = entries[read.call] {
                recorder?.cacheRead(hit: true)
                read.answer.resume(returning: .answered(.success(reply)))
            } else {
                recorder?.cacheRead(hit: false)
                fill(read)
            }
        }
        if !waitingForBarrier.isEmpty { sendBarrier() }
    }

    private func fill(_ read: CacheRead) {
        guard isReady else { return read.answer.resume(returning: .uncached) }
        let call = read.call
        for key in call.keys { watched[key, default: (0, 0)].fills += 1 }
        let epochs = call.keys.map { watched[$0]!.epoch }
        let (flushes, generation) = (self.flushes, reads.generation)
        let command = RedisClient.functionCall(call.function, keys: call.keys, arguments: call.arguments)
        reads.send(command, PendingCommand(.handler { [unowned self] result, _ in
            var unchanged = flushes == self.flushes && generation == reads.generation && isReady
            for (key, epoch) in zip(call.keys, epochs) {
                let state = watched[key]!
                unchanged = unchanged && state.epoch == epoch
                watched[key] = state.fills == 1 ? nil : (state.fills - 1, state.epoch)
            }
            switch result {
            case .success(.error(let message)) where message.hasPrefix("ERR Function not found"):
                read.answer.resume(returning: .uncached)
            case .success(.error):
                read.answer.resume(returning: .answered(result))
            case .success(let reply):
                if unchanged, read.keep(reply) { insert(reply, for: call) }
                read.answer.resume(returning: .answered(result))
            case .failure:
                read.answer.resume(returning: .uncached)
            }
        }))
    }

    private func insert(_ reply: RedisReply, for call: CachedCall) {
        if entries[call] == nil, entries.count >= capacity, let evicted = entries.keys.first { remove(evicted) }
        entries[call] = reply
        for key in call.keys { dependents[key, default: []].insert(call) }
    }

    private func remove(_ call: CachedCall) {
        guard entries.removeValue(forKey: call) != nil else { return }
        for key in call.keys {
            dependents[key]?.remove(call)
            if dependents[key]?.isEmpty == true { dependents[key] = nil }
        }
    }

    private func invalidate(_ key: String) {
        if let state = watched[key] { watched[key] = (state.fills, state.epoch &+ 1) }
        guard let calls = dependents.removeValue(forKey: key) else { return }
        for call in calls { remove(call) }
    }

    private func flush() {
        entries.removeAll()
        dependents.removeAll()
        flushes &+= 1
    }

    // MARK: - The two connections

    private static let subscribe = RedisClient.argv(["SUBSCRIBE", invalidationChannel])

    /// The `run_id` of an INFO server reply: which server process a connection reached.
    private static func runID(_ result: Result<RedisReply, RedisError>) -> String? {
        guard case .success(let reply) = result, let text = reply.string else { return nil }
        return text.split(whereSeparator: \.isNewline).first { $0.hasPrefix("run_id:") }.map { String($0.dropFirst(7)) }
    }

    /// Learns the listener's client id and server, then subscribes.
    private func listenerReady() {
        var id: Int64?
        listener.send(RedisClient.argv(["CLIENT", "ID"]), PendingCommand(.handler { result, _ in
            if case .success(.integer(let value)) = result { id = value }
        }))
        listener.send(RedisClient.argv(["INFO", "server"]), PendingCommand(.handler { [unowned self] result, command in
            guard command.generation == listener.generation, let id, let server = Self.runID(result) else { return }
            (listenerID, listenerServer) = (id, server)
            subscribing = true
            listener.sendUnanswered(Self.subscribe)
        }))
    }

    private func listenerReceived(_ reply: RedisReply) {
        guard let parts = reply.array, parts.count == 3, let kind = parts[0].string else { return }
        switch kind {
        case "subscribe" where subscribing:
            subscribing = false
            listening = true
            session += 1
            enableTracking()
        case "subscribe":
            barrierPassed()
        case "message":
            guard let keys = parts[2].array else { return flush() }
            for key in keys { if let key = key.string { invalidate(key) } }
        default:
            break
        }
    }

    /// Turns tracking on for the reads connection, redirected to the listener's current
    /// connection, once both are up and on the same server (the run id tells: a client id alone
    /// could name someone else on another server behind the same address).
    private func enableTracking() {
        guard listening, let listenerID, !isReady, !enablingTracking, !isClosed, retryTimer == nil else { return }
        enablingTracking = true
        let (session, generation) = (self.session, reads.generation)
        var server: String?
        let identify = PendingCommand(.handler { result, _ in server = Self.runID(result) })
        let track = PendingCommand(.handler { [unowned self] result, _ in
            enablingTracking = false
            guard session == self.session, generation == reads.generation, listening else { return enableTracking() }
            switch result {
            case .success(.status) where server == listenerServer:
                tracking = (session, generation)
            case .success(.status):
                connectBothAgain()
            case .success(.error(let message)) where message.contains("redirect"):
                connectBothAgain()  // no such client there: another server
            case .success:
                // CLIENT TRACKING refused (an old server, an ACL): no cache.
                turnOff()
            case .failure:
                break  // the connection went; its ready event tries again
            }
        })
        reads.send(batch: [RedisClient.argv(["INFO", "server"]), RedisClient.argv(["CLIENT", "TRACKING", "on", "REDIRECT", String(listenerID)])],
                   [identify, track], generation: generation)
    }

    /// The two connections reached different servers: connect both again, after a pause (the
    /// address may lead to both for a while, as while a server is replaced behind a proxy).
    private func connectBothAgain() {
        reads.reset(reason: "not on the read cache's invalidation server")
        retryTimer = loop.schedule(after: retryPause) { [unowned self] in
            retryTimer = nil
            listener.reset(reason: "not on the read cache's reads server")
        }
    }

    /// For good: every read goes uncached.
    private func turnOff() {
        isClosed = true
        listening = false
        tracking = nil
        listener.close()
        reads.close()
        flush()
        releaseBarrierReads()
    }

    private func listenerLost() {
        listening = false
        subscribing = false
        (listenerID, listenerServer) = (nil, nil)
        tracking = nil
        flush()
        releaseBarrierReads()
        // Its tracking redirects to a connection that is gone: start it over.
        reads.reset(reason: "the cache's invalidation connection was lost")
    }

    private func readsLost() {
        tracking = nil
        flush()
    }

    /// The reads at a barrier that will not come go uncached.
    private func releaseBarrierReads() {
        if let barrierTimer { loop.cancel(barrierTimer) }
        barrierTimer = nil
        let waiting = (atBarrier ?? []) + waitingForBarrier
        atBarrier = nil
        waitingForBarrier = []
        for read in waiting { read.answer.resume(returning: .uncached) }
    }
}
