// How a storage failure looks to a gRPC client: Redis down or slow is UNAVAILABLE (retry later);
// anything else Redis says is a bug on our side, INTERNAL. The message carries Redis's own
// words, so the server's log line for the failed RPC says what went wrong. A store (OrderStore)
// reports `StorageError`, its own type; the service turns it into a status with
// `RPCError(storage:)`.
import RedisClient
import RPCCore

/// A store could not do what it was asked: its storage is away (try again), or it failed.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case unavailable, failed }
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// What a Redis failure means to a store.
    public init(_ error: RedisError) {
        self.init(error.isTransient ? .unavailable : .failed, "\(error)")
    }

    public var description: String { message }
}

extension RPCError {
    public init(storage error: StorageError) {
        switch error.kind {
        case .unavailable: self.init(.unavailable, "storage is unavailable, try again (\(error.message))")
        case .failed: self.init(.internal, "storage error (\(error.message))")
        }
    }

    public init(storage error: RedisError) {
        self.init(storage: StorageError(error))
    }
}

/// Runs a store operation for an RPC: a storage failure becomes the status a client should see.
public func stored<T>(_ operation: () async throws(StorageError) -> T) async throws(RPCError) -> T {
    do { return try await operation() } catch { throw RPCError(storage: error) }
}

extension RedisClient {
    /// Runs a function for a store: a change (`change`: with WAIT when REDIS_WAIT_REPLICAS is
    /// set, so it is acknowledged only once that many replicas hold it) or a read. Failures as
    /// the store reports them.
    public func run(_ function: LuaFunction, keys: [String], arguments: [String] = [], change: Bool) async throws(StorageError) -> RedisReply {
        do {
            return try await call(function: function.name, library: function.library.code, keys: keys, arguments: arguments,
                                  waitForReplicas: change)
        } catch {
            throw StorageError(error)
        }
    }

    /// Runs a function that reads through the client's cache (`call(...cachingReplyIf:)`):
    /// answered from this process while nothing it read has changed, never older than a write
    /// that finished before the call. `keep` says which replies may be kept.
    public func read(_ function: LuaFunction, keys: [String], arguments: [String],
                     cachingReplyIf keep: @escaping @Sendable (RedisReply) -> Bool) async throws(StorageError) -> RedisReply {
        do {
            return try await call(function: function.name, library: function.library.code, keys: keys, arguments: arguments,
                                  cachingReplyIf: keep)
        } catch {
            throw StorageError(error)
        }
    }

    /// Runs a function that reads, a failure as the status a client should see.
    public func script(_ function: LuaFunction, keys: [String], arguments: [String] = []) async throws(RPCError) -> RedisReply {
        do throws(StorageError) {
            return try await run(function, keys: keys, arguments: arguments, change: false)
        } catch {
            throw RPCError(storage: error)
        }
    }
}
