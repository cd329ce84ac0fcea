// The read cache against a real redis-server: repeated reads are answered without running the
// function, and no read ever answers older than a write that finished before it began, whoever
// wrote, through flushes, refused replies, evictions and a server restart.
import RedisClient
import Synchronization
import Testing
import TestSupport

/// `value` answers {the hash field f of KEYS[1]}; `later` answers a status a caller would not
/// keep. Both count their runs in a key of their own (a write, which tracking does not follow).
private let library = """
#!lua name=cachetest
redis.register_function('value', function(keys)
  redis.call('INCR', 'cachetest:runs')
  return {redis.call('HGET', keys[1], 'f') or ''}
end)
redis.register_function('later', function(keys)
  redis.call('INCR', 'cachetest:runs')
  return redis.status_reply('LATER')
end)
"""

private func cachingClient(_ server: RedisServer, capacity: Int = 100) -> RedisClient {
    RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port, password: server.password,
                                                  readCacheCapacity: capacity))
}

private func value(_ client: RedisClient, _ key: String) async throws(RedisError) -> String? {
    try await client.call(function: "value", library: library, keys: [key], arguments: [], cachingReplyIf: { $0.array != nil })
        .array?.first?.string
}

private func runs(_ client: RedisClient) async throws(RedisError) -> Int64 {
    try await client.send(["GET", "cachetest:runs"]).int ?? 0
}

/// Reads `key` until a read is answered without running the function: the cache is connected
/// and holds it.
private func untilCached(_ client: RedisClient, _ key: String) async throws(RedisError) -> Bool {
    for _ in 0..<200 {
        _ = try await value(client, key)
        let before = try await runs(client)
        _ = try await value(client, key)
        if try await runs(client) == before { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// The last value written to each key (set once its write finished) and the stale reads seen.
private final class RaceProgress: Sendable {
    let written: Mutex<[Int]>
    let stale = Atomic<Int>(0)
    init(keys: Int) { written = Mutex(Array(repeating: 0, count: keys)) }
}

@Suite(.serialized) struct ReadCacheTests {
    @Test func repeatedReadsAreAnsweredFromTheCacheUntilAKeyChanges() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server)
        let writer = makeClient(server)
        defer { client.close(); writer.close() }
        _ = try await writer.send(["HSET", "cached:a", "f", "1"])
        #expect(try await untilCached(client, "cached:a"))
        let before = try await runs(client)
        for _ in 0..<100 { #expect(try await value(client, "cached:a") == "1") }
        #expect(try await runs(client) == before)

        _ = try await writer.send(["HSET", "cached:a", "f", "2"])
        #expect(try await value(client, "cached:a") == "2")
        #expect(try await runs(client) == before + 1)
        #expect(try await value(client, "cached:a") == "2")
        #expect(try await runs(client) == before + 1)
    }

    @Test func aReadAfterAnotherClientsWriteAlwaysSeesIt() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server)
        let writer = makeClient(server)
        defer { client.close(); writer.close() }
        _ = try await writer.send(["HSET", "fresh:a", "f", "0"])
        #expect(try await untilCached(client, "fresh:a"))
        // Each write is followed at once by a read that must see it, though the entry it
        // replaces was cached a moment before (the invalidation may still be on its way).
        for round in 1...300 {
            _ = try await writer.send(["HSET", "fresh:a", "f", "\(round)"])
            let seen = try await value(client, "fresh:a")
            #expect(seen == "\(round)")
            _ = try await value(client, "fresh:a")
        }
    }

    @Test func concurrentReadersNeverSeeAValueOlderThanAFinishedWrite() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server, capacity: 3)
        let writer = makeClient(server)
        defer { client.close(); writer.close() }
        let keys = ["race:a", "race:b", "race:c", "race:d"]
        for key in keys { _ = try await writer.send(["HSET", key, "f", "0"]) }
        #expect(try await untilCached(client, keys[0]))
        let progress = RaceProgress(keys: keys.count)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var random = SplitMix64(seed: 11)
                for round in 1...2_000 {
                    let index = Int(random.next() % UInt64(keys.count))
                    _ = try await writer.send(["HSET", keys[index], "f", "\(round)"])
                    progress.written.withLock { $0[index] = round }
                }
            }
            for reader in 0..<6 {
                group.addTask {
                    var random = SplitMix64(seed: UInt64(reader))
                    for _ in 0..<1_000 {
                        let index = Int(random.next() % UInt64(keys.count))
                        let floor = progress.written.withLock { $0[index] }
                        let seen = Int(try await value(client, keys[index]) ?? "") ?? -1
                        if seen < floor { progress.stale.add(1, ordering: .relaxed) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let stale = progress.stale.load(ordering: .relaxed)
        #expect(stale == 0)
        let written = progress.written.withLock { $0 }
        for (index, key) in keys.enumerated() {
            let last = "\(written[index])"
            #expect(try await value(client, key) == last)
        }
    }

    @Test func repliesTheCallerDoesNotKeepRunEveryTime() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server)
        defer { client.close() }
        #expect(try await untilCached(client, "kept:a"))
        let before = try await runs(client)
        for _ in 0..<5 {
            let reply = try await client.call(function: "later", library: library, keys: ["kept:b"], arguments: [],
                                              cachingReplyIf: { $0.array != nil })
            #expect(reply == .status("LATER"))
        }
        #expect(try await runs(client) == before + 5)
    }

    @Test func aServerThatRefusesTrackingIsReadUncached() async throws {
        let server = try await RedisServer.started()
        let writer = makeClient(server)
        defer { writer.close() }
        _ = try await writer.send(["ACL", "SETUSER", "default", "-client|tracking"])
        let client = cachingClient(server)
        defer { client.close() }
        _ = try await writer.send(["HSET", "refused:a", "f", "1"])
        for round in 0..<20 {
            let before = try await runs(client)
            #expect(try await value(client, "refused:a") == "1")
            #expect(try await runs(client) == before + 1, "round \(round): every read runs the function")
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func aFlushEmptiesTheCache() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server)
        let writer = makeClient(server)
        defer { client.close(); writer.close() }
        _ = try await writer.send(["HSET", "flushed:a", "f", "1"])
        #expect(try await untilCached(client, "flushed:a"))
        _ = try await writer.send(["FLUSHALL"])
        #expect(try await value(client, "flushed:a") == "")
    }

    @Test func aRestartedServerNeverAnswersFromTheOldCache() async throws {
        let server = try await RedisServer.started()
        let client = cachingClient(server)
        let writer = makeClient(server)
        defer { client.close(); writer.close() }
        _ = try await writer.send(["HSET", "restart:a", "f", "before"])
        #expect(try await untilCached(client, "restart:a"))
        server.kill()
        try await server.relaunch()
        // The new server has no data until this write; the function is loaded again on use.
        let rewritten = await eventually { () throws(RedisError) in try await writer.send(["HSET", "restart:a", "f", "after"]) }
        #expect((try? rewritten.get()) != nil)
        let read = await eventually { () throws(RedisError) in try await value(client, "restart:a") }
        #expect((try? read.get()) == "after")
        #expect(try await untilCached(client, "restart:a"))
        #expect(try await value(client, "restart:a") == "after")
    }
}
