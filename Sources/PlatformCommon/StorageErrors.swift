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

extension RedisClient {
    /// Runs a function that reads (or only rewrites state that the consumers apply again
    /// anyway), mapping Redis failures to the status a client should see.
    public func script(_ function: LuaFunction, keys: [String], arguments: [String] = []) async throws(RPCError) -> RedisReply {
        try await run(function, keys: keys, arguments: arguments, waitForReplicas: false)
    }

    /// Runs a function that changes state. With REDIS_WAIT_REPLICAS set it is acknowledged only
    /// once that many replicas hold the change; otherwise UNAVAILABLE (the master has it, but it
    /// may not survive the master's loss: retry).
    public func change(_ function: LuaFunction, keys: [String], arguments: [String] = []) async throws(RPCError) -> RedisReply {
        try await run(function, keys: keys, arguments: arguments, waitForReplicas: true)
    }

    private func run(_ function: LuaFunction, keys: [String], arguments: [String], waitForReplicas: Bool) async throws(RPCError) -> RedisReply {
        do {
            return try await call(function: function.name, library: function.library.code, keys: keys, arguments: arguments,
                                  waitForReplicas: waitForReplicas)
        } catch {
            throw RPCError(storage: error)
        }
    }

    /// Runs a function for a store: a change (with WAIT when configured) or a read, failures as
    /// the store reports them.
    public func run(_ function: LuaFunction, keys: [String], arguments: [String] = [], change: Bool) async throws(StorageError) -> RedisReply {
        do {
            return try await call(function: function.name, library: function.library.code, keys: keys, arguments: arguments,
                                  waitForReplicas: change)
        } catch {
            throw StorageError(error)
        }
    }

    /// Sends a command, mapping Redis failures to the status a client should see. A command that
    /// changes state passes `waitForReplicas` (see `change`).
    public func command(_ arguments: [String], waitForReplicas: Bool = false) async throws(RPCError) -> RedisReply {
        do {
            return try await send(arguments, waitForReplicas: waitForReplicas)
        } catch {
            throw RPCError(storage: error)
        }
    }
}

/// Scripts report a domain outcome as an error reply `CODE:message`, e.g. `NOT_FOUND:order x`;
/// this turns such a reply into the matching status.
public func scriptOutcome(_ reply: RedisReply) throws(RPCError) -> RedisReply {
    guard case .array(let items) = reply, items.count == 2, items[0].string == "ERR",
          let text = items[1].string else { return reply }
    let parts = text.split(separator: ":", maxSplits: 1)
    let code: StatusCode = switch parts.first {
    case "NOT_FOUND": .notFound
    case "FAILED_PRECONDITION": .failedPrecondition
    case "PERMISSION_DENIED": .permissionDenied
    case "INVALID_ARGUMENT": .invalidArgument
    default: .internal
    }
    throw RPCError(code, parts.count == 2 ? String(parts[1]) : text)
}
