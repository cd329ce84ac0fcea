// Helpers shared by the Redis client tests: a client for a fixture server, and a way to
// capture the typed error of a call.
import RedisClient
import Synchronization
import TestSupport

func makeClient(_ server: RedisServer, password: String? = nil, commandTimeout: Duration = .seconds(5)) -> RedisClient {
    RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port, password: password ?? server.password,
                                                  commandTimeout: commandTimeout))
}

/// The error `body` threw, or nil if it succeeded.
func error<T>(of body: () async throws(RedisError) -> T) async -> RedisError? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error
    }
}

/// Retries `body` until it succeeds or `limit` passes; returns the last result.
func eventually<T>(within limit: Duration = .seconds(5), _ body: () async throws(RedisError) -> T) async -> Result<T, RedisError> {
    let deadline = ContinuousClock.now + limit
    while true {
        do {
            return .success(try await body())
        } catch {
            if ContinuousClock.now >= deadline { return .failure(error) }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Collects a subscription's events in the background, so tests can wait for some to arrive
/// without cancelling the iteration (which would end the subscription).
final class EventCollector: Sendable {
    private final class Store: Sendable {
        let events = Mutex<[RedisSubscription.Event]>([])
    }
    private let store = Store()
    private let task: Task<Void, Never>

    init(_ subscription: RedisSubscription) {
        let store = self.store
        task = Task {
            for await event in subscription { store.events.withLock { $0.append(event) } }
        }
    }

    var all: [RedisSubscription.Event] { store.events.withLock { $0 } }

    /// Waits until `condition` holds for the events so far, up to `limit`; returns whether it did.
    func wait(within limit: Duration = .seconds(5), until condition: ([RedisSubscription.Event]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if condition(all) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(all)
    }

    /// Waits until the sequence has ended.
    func finished() async { await task.value }
}
