// The client against a Sentinel-watched master (one replica, three sentinels): it finds the
// master, and after the master is SIGKILLed it follows the failover with its commands, its
// subscription and its blocking connection.
import RedisClient
import Testing
import TestSupport

@Suite(.serialized) struct SentinelTests {
    @Test func theClientFindsTheMasterAndFollowsAFailover() async throws {
        let group = try await RedisSentinelGroup.start()
        let client = RedisClient(configuration: RedisConfiguration(
            deployment: .sentinel(sentinels: try RedisEndpoint.list(parsing: group.sentinelList), masterName: group.masterName)))
        defer { client.close() }
        let master = try group.masterPort()
        #expect(try await client.send(["SET", "sentinel:k", "before"]) == .status("OK"))
        #expect(group.cli(master, ["GET", "sentinel:k"]).hasPrefix("before"))
        let subscription = try await client.subscribe(to: ["sentinel:news"])
        let events = EventCollector(subscription)
        let blocking = client.makeBlockingConnection()
        defer { blocking.close() }
        #expect(try await blocking.send(["XADD", "sentinel:stream", "1-1", "n", "1"]).string == "1-1")
        // On the replica before the master dies (replication is asynchronous: on a loaded
        // machine the entry was once lost with the master, and the stream below held one).
        #expect(try await blocking.send(["WAIT", "1", "5000"]).int == 1)

        try group.killMaster()
        let written = await eventually(within: .seconds(30)) { () throws(RedisError) in
            try await client.send(["SET", "sentinel:k", "after"])
        }
        #expect(try written.get() == .status("OK"))
        let promoted = try await group.waitForNewMaster(replacing: master)
        #expect(group.cli(promoted, ["GET", "sentinel:k"]).hasPrefix("after"))
        #expect(try await client.send(["GET", "sentinel:k"]).string == "after")

        #expect(await events.wait(within: .seconds(30)) { $0.contains(.resubscribed) })
        #expect(await publishUntilReceived(client, channel: "sentinel:news", message: "from the new master", by: events))
        let read = await eventually(within: .seconds(30)) { () throws(RedisError) in
            try await blocking.send(["XADD", "sentinel:stream", "2-1", "n", "2"])
        }
        #expect(try read.get().string == "2-1")
        #expect(group.cli(promoted, ["XLEN", "sentinel:stream"]).hasPrefix("2"))
        subscription.close()
    }

    @Test func noSentinelReachableFailsFastWithUnavailable() async throws {
        let port = try RedisServer.freePort()
        let client = RedisClient(configuration: RedisConfiguration(
            deployment: .sentinel(sentinels: [RedisEndpoint(host: "127.0.0.1", port: port)], masterName: "nobody")))
        defer { client.close() }
        let started = ContinuousClock.now
        let failure = await error { () throws(RedisError) in try await client.send(["PING"]) }
        #expect(failure?.kind == .unavailable)
        #expect(failure?.description.contains("no sentinel named the master") == true)
        #expect(ContinuousClock.now - started < .seconds(4))
    }
}
