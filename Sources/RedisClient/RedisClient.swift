// The public face of the module: an async, Sendable Redis client over one pipelined connection.
//
// Design: all connection state lives in loop-confined objects (`ConnectionManager`,
// `TransactionGate`) on one EventLoop thread; a call hops there with `execute` and suspends on a
// continuation the loop resumes with the reply. Many tasks share the one connection: hiredis
// writes their commands back to back and matches replies in order, so no caller waits for
// another's round trip and no thread ever blocks.
//
// WATCH is per connection, so check-and-set transactions cannot share the pipelined connection
// (another task's command could land between WATCH and EXEC, or its UNWATCH/EXEC could clear our
// watch). They run on a second, lazily opened connection, one transaction at a time per client,
// and are pinned to one connection generation: if the connection was replaced mid-way the watch
// is gone, so the transaction fails with `.unavailable` instead of committing unchecked.
// Plain MULTI/EXEC batches need no WATCH and go, contiguously, over the shared connection.
//
// Lua runs as Redis Functions: `call` runs FCALL and, where the node lacks the function (a new or
// flushed server, a cluster node or a promoted replica that never had it), loads its library
// (FUNCTION LOAD REPLACE) in the same batch as the call, so both reach the node of the call's
// first key. A library's top level runs once per node, where a script's (EVAL) would run on
// every call, and no per-call cache of script hashes is needed.
//
// Deployments: every connection above is a `CommandSink`. Standalone, it is one
// `ConnectionManager`; with Sentinel, a manager that asks the sentinels for the master before
// each connect; in a cluster, a `ClusterRouter` holding one manager per master, all routers of a
// client sharing one slot map (`ClusterTopology`). The rest of this file does not know which.
//
// Cached reads: `call(function:...cachingReplyIf:)` goes through a `ReadCache` (ReadCache.swift)
// when the configuration gives it room and the deployment is a single server; it answers from
// this process while Redis has not told it that a key the function read changed, and never with
// anything older than a write that finished before the read arrived.
//
// WAIT: a write made with `waitForReplicas` is followed by `WAIT n timeout` in the same batch,
// so the two are sent back to back on the one connection (the same node) and WAIT counts the
// replicas that have that write.
import EventLoop
import Synchronization

/// A Redis client: one self-reconnecting connection shared by all callers (one per master in a
/// cluster), plus a dedicated connection for WATCH transactions and one per subscription. The
/// deployment (`configuration.deployment`) decides where they connect. Call `close()` when done.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let loop: EventLoop
    private let ownsLoop: Bool
    private let discovery: Discovery
    private let commands: LoopBound<any CommandSink>
    private let watchConnection: LoopBound<any CommandSink>
    private let transactionGate: LoopBound<TransactionGate>
    private let readCache: LoopBound<ReadCache>?
    /// Set by `close()`: an owned loop stops, and work queued on a stopped loop never runs.
    private let isClosed = Atomic<Bool>(false)

    /// Starts connecting at once. Without `loop`, the client runs (and owns) a loop of its own.
    /// `observer` is told about the commands of the shared and the WATCH connections (metrics).
    public init(configuration: RedisConfiguration = RedisConfiguration(), loop: EventLoop? = nil,
                observer: (any RedisObserver)? = nil) {
        self.configuration = configuration
        self.loop = loop ?? EventLoop(name: "redis-\(configuration.endpoint)")
        ownsLoop = loop == nil
        discovery = Discovery(configuration: configuration, loop: self.loop)
        let recorder = observer?.makeRecorder(loop: self.loop)
        commands = LoopBound(discovery.makeSink(recorder: recorder), loop: self.loop)
        watchConnection = LoopBound(discovery.makeSink(recorder: recorder), loop: self.loop)
        transactionGate = LoopBound(TransactionGate(), loop: self.loop)
        if configuration.readCacheCapacity > 0, case .standalone = configuration.deployment {
            readCache = LoopBound(ReadCache(configuration: configuration, loop: self.loop, recorder: recorder), loop: self.loop)
        } else {
            readCache = nil
        }
        let commands = self.commands
        self.loop.execute { commands.value.start() }
    }

    /// Fails pending and later commands with `.unavailable`, closes every connection of this
    /// client except subscriptions (close those yourself) and stops the client's own loop.
    public func close() {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let (commands, watchConnection, discovery, readCache) = (self.commands, self.watchConnection, self.discovery, self.readCache)
        loop.execute {
            commands.value.close()
            watchConnection.value.close()
            readCache?.value.close()
            discovery.close()
        }
        if ownsLoop, !loop.inEventLoop { loop.shutdownGracefully() }
    }

    // MARK: - Commands

    /// Sends one command, e.g. `["SET", key, value]`. An error reply throws `.server`.
    public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        try await send(arguments.map { Array($0.utf8) })
    }

    /// Sends one command given as raw bytes per argument (binary-safe: NUL bytes are fine).
    public func send(_ arguments: [[UInt8]]) async throws(RedisError) -> RedisReply {
        try await checked(submit(arguments, on: commands))
    }

    /// `send`, and with `waitForReplicas` (and `configuration.waitReplicas` > 0) WAIT right after
    /// it on the same connection. Throws `.notReplicated` when fewer replicas acknowledged: the
    /// command did run on the master and is not undone. Use it for writes.
    public func send(_ arguments: [String], waitForReplicas: Bool) async throws(RedisError) -> RedisReply {
        try await send(Self.argv(arguments), waitingForReplicas: waitForReplicas)
    }

    /// PUBLISH; returns how many subscribers received the message (in a cluster, only those
    /// connected to the node it was sent to: the message still reaches every node's subscribers).
    @discardableResult
    public func publish(channel: String, message: String) async throws(RedisError) -> Int {
        try await publish(channel: channel, message: Array(message.utf8))
    }

    /// PUBLISH with a binary payload.
    @discardableResult
    public func publish(channel: String, message: [UInt8]) async throws(RedisError) -> Int {
        let reply = try await send([Array("PUBLISH".utf8), Array(channel.utf8), message])
        return Int(reply.int ?? 0)
    }

    // MARK: - Transactions

    /// MULTI, `commands`, EXEC. Without `keys` this runs on the shared connection and always
    /// returns the EXEC results (errors of single commands stay `.error` values). With `keys`
    /// they are WATCHed first on the transaction connection, and nil means one changed.
    public func transaction(watching keys: [String] = [], _ commands: [[String]]) async throws(RedisError) -> [RedisReply]? {
        guard !keys.isEmpty else {
            let exec = try await checked(submitTransaction(commands, on: self.commands, generation: nil))
            return exec.array
        }
        let outcome = try await checkAndSet(watching: keys) { _ throws(RedisError) in commands }
        if case .committed(let results) = outcome { return results }
        return nil
    }

    /// Optimistic check-and-set: WATCHes `keys`, lets `body` read through the given connection
    /// and decide, then runs its commands in MULTI/EXEC. `body` returns nil to give up (nothing
    /// written). On `.conflict` a watched key changed after WATCH: read again and retry.
    /// Transactions of one client run one at a time on a connection of their own.
    public func checkAndSet(
        watching keys: [String],
        _ body: (WatchedConnection) async throws(RedisError) -> [[String]]?
    ) async throws(RedisError) -> RedisTransactionOutcome {
        if isClosed.load(ordering: .acquiring) { throw closedError }
        let gate = transactionGate
        let watchConnection = self.watchConnection
        await withUnsafeContinuation { (entered: UnsafeContinuation<Void, Never>) in
            gate.loop.execute {
                watchConnection.value.start()
                gate.value.enter(entered)
            }
        }
        defer { gate.loop.execute { gate.value.leave() } }

        let (watchReply, generation) = await withUnsafeContinuation { continuation in
            watchConnection.loop.execute {
                watchConnection.value.send(Self.argv(["WATCH"] + keys), PendingCommand(.handler { result, command in
                    continuation.resume(returning: (result, command.generation))
                }))
            }
        }
        _ = try checked(watchReply)
        let connection = WatchedConnection(client: self, generation: generation)
        let writes: [[String]]?
        do {
            writes = try await body(connection)
        } catch {
            _ = try? await connection.send(["UNWATCH"])
            throw error
        }
        guard let writes else {
            _ = try await connection.send(["UNWATCH"])
            return .aborted
        }
        let exec = try await checked(submitTransaction(writes, on: watchConnection, generation: generation))
        if let results = exec.array { return .committed(results) }
        return .conflict
    }

    /// The transaction connection inside `checkAndSet`, pinned to the connection that holds the
    /// WATCH. Use it only inside the closure it was given to.
    public struct WatchedConnection: Sendable {
        fileprivate let client: RedisClient
        fileprivate let generation: Int

        public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
            try await send(arguments.map { Array($0.utf8) })
        }

        public func send(_ arguments: [[UInt8]]) async throws(RedisError) -> RedisReply {
            try await client.checked(client.submit(arguments, on: client.watchConnection, generation: generation))
        }
    }

    private func send(_ arguments: [[UInt8]], waitingForReplicas: Bool) async throws(RedisError) -> RedisReply {
        try await send(batch: [arguments], waitingForReplicas: waitingForReplicas)
    }

    /// Sends `batch` together (in a cluster, to the node of its first key) and returns the last
    /// command's reply; with `waitingForReplicas`, WAIT follows on the same connection.
    private func send(batch: [[[UInt8]]], waitingForReplicas: Bool) async throws(RedisError) -> RedisReply {
        let replicas = configuration.waitReplicas
        guard waitingForReplicas, replicas > 0 else {
            if batch.count == 1 { return try await send(batch[0]) }
            let replies = await submit(batch: batch, on: commands)
            for reply in replies.dropLast() { _ = try checked(reply) }
            return try checked(replies[replies.count - 1])
        }
        let milliseconds = max(1, Int(configuration.waitTimeout.nanoseconds / 1_000_000))
        let replies = await submit(batch: batch + [Self.argv(["WAIT", String(replicas), String(milliseconds)])], on: commands)
        for reply in replies.dropLast(2) { _ = try checked(reply) }
        let reply = try checked(replies[replies.count - 2])
        let acknowledged = Int(try checked(replies[replies.count - 1]).int ?? 0)
        guard acknowledged >= replicas else {
            let command = batch.last.map { String(decoding: $0[0], as: UTF8.self) } ?? ""
            throw RedisError(.notReplicated(acknowledged: acknowledged), endpoint: configuration.endpoint,
                             detail: "WAIT \(replicas) \(milliseconds) after \(command)")
        }
        return reply
    }

    // MARK: - Functions

    /// Calls `function` of a Redis Functions library (FCALL). Where the node does not know the
    /// function yet, the library's code (`#!lua name=...`) is loaded first, in the same batch as
    /// the call, so that in a cluster both go to the node of the call's first key. A library's
    /// top level runs once per node, at load; a script's runs on every call. With
    /// `waitForReplicas` as `send(_:waitForReplicas:)`.
    public func call(function: String, library: String, keys: [String], arguments: [String],
                     waitForReplicas: Bool = false) async throws(RedisError) -> RedisReply {
        let call = Self.functionCall(function, keys: keys, arguments: arguments)
        do {
            return try await send(call, waitingForReplicas: waitForReplicas)
        } catch {
            guard case .server(let message) = error.kind, message.hasPrefix("ERR Function not found") else { throw error }
            let load = Self.argv(["FUNCTION", "LOAD", "REPLACE", library])
            return try await send(batch: [load, call], waitingForReplicas: waitForReplicas)
        }
    }

    /// `call` for a function that reads (it may write only what it answers anyway, as a
    /// read-your-writes read does), answered from the client's cache when it has a reply none of
    /// whose keys changed since (`configuration.readCacheCapacity`; standalone only). A cached
    /// answer is never older than a write that finished before this call began, whoever made
    /// it. A reply is kept only if `keep` says so: not a "look again later" answer. Without a
    /// cache (or while it reconnects) this is a plain `call`.
    public func call(function: String, library: String, keys: [String], arguments: [String],
                     cachingReplyIf keep: @escaping @Sendable (RedisReply) -> Bool) async throws(RedisError) -> RedisReply {
        if let readCache, !isClosed.load(ordering: .acquiring) {
            let read = CachedCall(function: function, keys: keys, arguments: arguments)
            let answer = await withUnsafeContinuation { continuation in
                readCache.loop.execute { readCache.value.read(CacheRead(call: read, keep: keep, answer: continuation)) }
            }
            if case .answered(let result) = answer { return try checked(result) }
        }
        return try await call(function: function, library: library, keys: keys, arguments: arguments)
    }

    // MARK: - Pub/Sub

    /// Subscribes to `channels` on a connection of its own; returns once Redis has confirmed
    /// every channel, so a message published afterwards is received. Fails fast with
    /// `.unavailable` when Redis cannot be reached now; later drops are healed in the background.
    public func subscribe(to channels: [String]) async throws(RedisError) -> RedisSubscription {
        if isClosed.load(ordering: .acquiring) { throw closedError }
        return try await RedisSubscription.open(channels: channels, connection: discovery.makeSubscriptionConnection())
    }

    // MARK: - Blocking commands

    /// A connection of its own for blocking reads such as XREAD BLOCK: on the shared pipelined
    /// connection they would hold every other caller's reply behind them. It reconnects by
    /// itself like the others; `close()` it when done. In a cluster each command goes to the
    /// master of its key, on a connection to that node of this blocking connection's own.
    public func makeBlockingConnection() -> RedisBlockingConnection {
        let connection = LoopBound(discovery.makeSink(), loop: loop)
        loop.execute { connection.value.start() }
        return RedisBlockingConnection(client: self, connection: connection)
    }

    // MARK: - Plumbing

    private var closedError: RedisError {
        RedisError(.unavailable, endpoint: configuration.endpoint, detail: "client closed")
    }

    fileprivate func submit(_ arguments: [[UInt8]], on connection: LoopBound<any CommandSink>, generation: Int? = nil) async -> Result<RedisReply, RedisError> {
        if isClosed.load(ordering: .acquiring) { return .failure(closedError) }
        return await withUnsafeContinuation { continuation in
            connection.loop.execute {
                connection.value.send(arguments, PendingCommand(.caller(continuation)), generation: generation)
            }
        }
    }

    /// MULTI, commands, EXEC sent contiguously; the result is EXEC's.
    private func submitTransaction(_ commands: [[String]], on connection: LoopBound<any CommandSink>, generation: Int?) async -> Result<RedisReply, RedisError> {
        let batch = ([["MULTI"]] + commands + [["EXEC"]]).map(Self.argv)
        return await submit(batch: batch, on: connection, generation: generation).last!
    }

    /// Commands sent back to back on one connection; one result per command.
    private func submit(batch: [[[UInt8]]], on connection: LoopBound<any CommandSink>, generation: Int? = nil) async -> [Result<RedisReply, RedisError>] {
        if isClosed.load(ordering: .acquiring) { return batch.map { _ in .failure(closedError) } }
        return await withUnsafeContinuation { continuation in
            connection.loop.execute {
                var results: [Result<RedisReply, RedisError>] = []
                let commands = batch.map { _ in
                    PendingCommand(.handler { result, _ in
                        results.append(result)
                        if results.count == batch.count { continuation.resume(returning: results) }
                    })
                }
                connection.value.send(batch: batch, commands, generation: generation)
            }
        }
    }

    /// FCALL of `function` with its keys and arguments, as argv.
    static func functionCall(_ function: String, keys: [String], arguments: [String]) -> [[UInt8]] {
        argv(["FCALL", function, String(keys.count)] + keys + arguments)
    }

    static func argv(_ arguments: [String]) -> [[UInt8]] {
        arguments.map { Array($0.utf8) }
    }

    /// The reply, with an error reply turned into a thrown `.server` error.
    fileprivate func checked(_ result: Result<RedisReply, RedisError>) throws(RedisError) -> RedisReply {
        let reply = try result.get()
        if case .error(let message) = reply {
            throw RedisError(.server(message), endpoint: configuration.endpoint, detail: message)
        }
        return reply
    }
}

/// How a `checkAndSet` transaction ended.
public enum RedisTransactionOutcome: Sendable, Equatable {
    /// EXEC ran; one reply per command (a failed command is an `.error` value).
    case committed([RedisReply])
    /// A watched key changed before EXEC; nothing was written.
    case conflict
    /// The body returned nil; nothing was written.
    case aborted
}

/// Lets one transaction at a time use the WATCH connection. Loop-confined.
final class TransactionGate {
    private var busy = false
    private var queue = FIFO<UnsafeContinuation<Void, Never>>()

    func enter(_ continuation: UnsafeContinuation<Void, Never>) {
        if busy {
            queue.append(continuation)
        } else {
            busy = true
            continuation.resume()
        }
    }

    func leave() {
        if let next = queue.first {
            queue.removeFirst()
            next.resume()
        } else {
            busy = false
        }
    }
}

/// A dedicated connection for blocking commands; see `RedisClient.makeBlockingConnection`. Send
/// one command at a time (a blocked command holds the connection until it returns).
public final class RedisBlockingConnection: Sendable {
    private let client: RedisClient
    private let connection: LoopBound<any CommandSink>

    fileprivate init(client: RedisClient, connection: LoopBound<any CommandSink>) {
        self.client = client
        self.connection = connection
    }

    /// Sends one command; an error reply throws `.server`.
    public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        try await client.checked(client.submit(arguments.map { Array($0.utf8) }, on: connection))
    }

    public func close() {
        let connection = self.connection
        connection.loop.execute { connection.value.close() }
    }
}

/// What finds the servers of a client's deployment, shared by all its connections. Loop-confined
/// like them; off the loop it is only handed to the constructors of new connections, which is
/// why it is `@unchecked Sendable`.
private enum Discovery: @unchecked Sendable {
    case standalone(RedisConfiguration, EventLoop)
    case cluster(ClusterTopology)
    case sentinel(SentinelResolver, RedisConfiguration, EventLoop)

    init(configuration: RedisConfiguration, loop: EventLoop) {
        switch configuration.deployment {
        case .standalone:
            self = .standalone(configuration, loop)
        case .cluster(let seeds):
            self = .cluster(ClusterTopology(seeds: seeds, configuration: configuration, loop: loop))
        case .sentinel(let sentinels, let masterName):
            let resolver = SentinelResolver(sentinels: sentinels, masterName: masterName, configuration: configuration, loop: loop)
            self = .sentinel(resolver, configuration, loop)
        }
    }

    /// A new pipelined connection for commands (in a cluster, a router with one per master),
    /// telling `recorder` about them.
    func makeSink(recorder: (any RedisRecorder)? = nil) -> any CommandSink {
        switch self {
        case .cluster(let topology): ClusterRouter(topology: topology, recorder: recorder)
        default: makeSubscriptionConnection(recorder: recorder)
        }
    }

    /// A new single connection: in a cluster to any node (for Pub/Sub, which is cluster-wide),
    /// with Sentinel to the master.
    func makeSubscriptionConnection(recorder: (any RedisRecorder)? = nil) -> ConnectionManager {
        switch self {
        case .standalone(let configuration, let loop):
            ConnectionManager(configuration: configuration, loop: loop, recorder: recorder)
        case .cluster(let topology):
            ConnectionManager(configuration: topology.configuration, loop: topology.loop, target: .discovered(
                label: topology.configuration.endpoint, mustBeMaster: false, find: topology.nodeForSubscription), recorder: recorder)
        case .sentinel(let resolver, let configuration, let loop):
            ConnectionManager(configuration: configuration, loop: loop, target: .discovered(
                label: configuration.endpoint, mustBeMaster: true, find: resolver.findMaster), recorder: recorder)
        }
    }

    /// Closes the discovery connections (the cluster's control connection, the sentinels).
    func close() {
        switch self {
        case .standalone: break
        case .cluster(let topology): topology.close()
        case .sentinel(let resolver, _, _): resolver.close()
        }
    }
}
