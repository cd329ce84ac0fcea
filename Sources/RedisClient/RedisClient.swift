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
// Scripts: `eval` loads a script once with SCRIPT LOAD, caches its SHA1 by script text and runs
// EVALSHA; on NOSCRIPT (server restarted or flushed) it falls back to EVAL, which reloads it.
import EventLoop
import Synchronization

/// A Redis client: one self-reconnecting connection shared by all callers, plus a dedicated
/// connection for WATCH transactions and one per subscription. Call `close()` when done.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let loop: EventLoop
    private let ownsLoop: Bool
    private let commands: LoopBound<ConnectionManager>
    private let watchConnection: LoopBound<ConnectionManager>
    private let transactionGate: LoopBound<TransactionGate>
    private let scriptHashes = Mutex<[String: String]>([:])
    /// Set by `close()`: an owned loop stops, and work queued on a stopped loop never runs.
    private let isClosed = Atomic<Bool>(false)

    /// Starts connecting at once. Without `loop`, the client runs (and owns) a loop of its own.
    public init(configuration: RedisConfiguration = RedisConfiguration(), loop: EventLoop? = nil) {
        self.configuration = configuration
        self.loop = loop ?? EventLoop(name: "redis-\(configuration.endpoint)")
        ownsLoop = loop == nil
        commands = LoopBound(ConnectionManager(configuration: configuration, loop: self.loop), loop: self.loop)
        watchConnection = LoopBound(ConnectionManager(configuration: configuration, loop: self.loop), loop: self.loop)
        transactionGate = LoopBound(TransactionGate(), loop: self.loop)
        let commands = self.commands
        self.loop.execute { commands.value.start() }
    }

    /// Fails pending and later commands with `.unavailable`, closes every connection of this
    /// client except subscriptions (close those yourself) and stops the client's own loop.
    public func close() {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let (commands, watchConnection) = (self.commands, self.watchConnection)
        loop.execute {
            commands.value.close()
            watchConnection.value.close()
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

    /// PUBLISH; returns how many subscribers received the message.
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
                watchConnection.value.send(Self.argv(["WATCH"] + keys), PendingCommand(.handler { result, generation in
                    continuation.resume(returning: (result, generation))
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

    // MARK: - Scripts

    /// Runs a Lua script by its SHA1 (EVALSHA), loading it on first use and again after NOSCRIPT.
    public func eval(_ script: String, keys: [String] = [], arguments: [String] = []) async throws(RedisError) -> RedisReply {
        let parameters = [String(keys.count)] + keys + arguments
        let hash: String
        if let cached = scriptHashes.withLock({ $0[script] }) {
            hash = cached
        } else {
            guard let loaded = try await send(["SCRIPT", "LOAD", script]).string else {
                throw RedisError(.server("SCRIPT LOAD returned no hash"), endpoint: configuration.endpoint, detail: "")
            }
            scriptHashes.withLock { $0[script] = loaded }
            hash = loaded
        }
        do {
            return try await send(["EVALSHA", hash] + parameters)
        } catch {
            guard case .server(let message) = error.kind, message.hasPrefix("NOSCRIPT") else { throw error }
            return try await send(["EVAL", script] + parameters)
        }
    }

    // MARK: - Pub/Sub

    /// Subscribes to `channels` on a connection of its own; returns once Redis has confirmed
    /// every channel, so a message published afterwards is received. Fails fast with
    /// `.unavailable` when Redis cannot be reached now; later drops are healed in the background.
    public func subscribe(to channels: [String]) async throws(RedisError) -> RedisSubscription {
        if isClosed.load(ordering: .acquiring) { throw closedError }
        return try await RedisSubscription.open(channels: channels, configuration: configuration, loop: loop)
    }

    // MARK: - Blocking commands

    /// A connection of its own for blocking reads such as XREAD BLOCK: on the shared pipelined
    /// connection they would hold every other caller's reply behind them. It reconnects by
    /// itself like the others; `close()` it when done.
    public func makeBlockingConnection() -> RedisBlockingConnection {
        let connection = LoopBound(ConnectionManager(configuration: configuration, loop: loop), loop: loop)
        loop.execute { connection.value.start() }
        return RedisBlockingConnection(client: self, connection: connection)
    }

    // MARK: - Plumbing

    private var closedError: RedisError {
        RedisError(.unavailable, endpoint: configuration.endpoint, detail: "client closed")
    }

    fileprivate func submit(_ arguments: [[UInt8]], on connection: LoopBound<ConnectionManager>, generation: Int? = nil) async -> Result<RedisReply, RedisError> {
        if isClosed.load(ordering: .acquiring) { return .failure(closedError) }
        return await withUnsafeContinuation { continuation in
            connection.loop.execute {
                connection.value.send(arguments, PendingCommand(.caller(continuation)), generation: generation)
            }
        }
    }

    /// MULTI, commands, EXEC sent contiguously; the result is EXEC's.
    private func submitTransaction(_ commands: [[String]], on connection: LoopBound<ConnectionManager>, generation: Int?) async -> Result<RedisReply, RedisError> {
        let batch = [["MULTI"]] + commands + [["EXEC"]]
        let arguments = batch.map(Self.argv)
        if isClosed.load(ordering: .acquiring) { return .failure(closedError) }
        return await withUnsafeContinuation { continuation in
            connection.loop.execute {
                let replies = arguments.dropLast().map { _ in PendingCommand(.discard) } + [PendingCommand(.caller(continuation))]
                connection.value.send(batch: arguments, replies, generation: generation)
            }
        }
    }

    private static func argv(_ arguments: [String]) -> [[UInt8]] {
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
    private let connection: LoopBound<ConnectionManager>

    fileprivate init(client: RedisClient, connection: LoopBound<ConnectionManager>) {
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
