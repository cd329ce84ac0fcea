// The client against a real Redis Cluster (3 masters, 1 replica each, started per test):
// routing by slot, scripts on every node, MOVED and ASK, Pub/Sub across nodes, blocking reads,
// a master's crash and WAIT. Serialized: six redis-servers per test are plenty for two cores.
import RedisClient
import Testing
import TestSupport

func makeClusterClient(_ cluster: RedisCluster, waitReplicas: Int = 0, seeds: Int = 1) throws -> RedisClient {
    let seedList = try RedisEndpoint.list(parsing: cluster.seedList)
    return RedisClient(configuration: RedisConfiguration(
        deployment: .cluster(seeds: Array(seedList.prefix(seeds))), waitReplicas: waitReplicas, waitTimeout: .seconds(3)))
}

/// A hash tag whose slot the master on `port` serves.
func tag(servedBy port: Int, in cluster: RedisCluster) throws -> String {
    let master = try #require(try cluster.nodes().first { $0.port == port })
    let tag = (0..<10_000).lazy.map { "t\($0)" }.first { tag in master.slots.contains { $0.contains(RedisHashSlot.of(tag)) } }
    return "{\(try #require(tag))}"
}

/// Publishes `message` until `events` has received it (a resubscribed subscription may still be
/// settling on its new node), for up to 30 s; returns whether it arrived.
func publishUntilReceived(_ client: RedisClient, channel: String, message: String, by events: EventCollector) async -> Bool {
    let delivered = await eventually(within: .seconds(30)) { () throws(RedisError) in
        _ = try await client.publish(channel: channel, message: message)
        if !(await events.wait(within: .milliseconds(200)) { $0.last?.text == message }) {
            throw RedisError(.timeout, endpoint: "", detail: "not received yet")
        }
    }
    return (try? delivered.get()) != nil
}

@Suite(.serialized) struct ClusterTests {
    @Test func keysSpreadOverEveryMasterFromOneSeed() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster)
        defer { client.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<300 {
                group.addTask { () throws in
                    #expect(try await client.send(["SET", "spread:\(index)", "v\(index)"]) == .status("OK"))
                    #expect(try await client.send(["GET", "spread:\(index)"]).string == "v\(index)")
                }
            }
            try await group.waitForAll()
        }
        for master in try cluster.masterPorts() {
            let keys = Int(cluster.cli(master, ["DBSIZE"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            #expect(keys > 50, "master \(master) holds \(keys) keys")
        }
        #expect(try await client.send(["PING"]) == .status("PONG"))
    }

    @Test func functionsAndTransactionsRunOnTheNodeOfTheirHashTag() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster)
        defer { client.close() }
        let library = """
            #!lua name=clustertests
            redis.register_function('clustertests_set_incr', function(KEYS, ARGV)
                redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])
            end)
            """
        func call(_ keys: [String], _ value: String) async throws(RedisError) -> RedisReply {
            try await client.call(function: "clustertests_set_incr", library: library, keys: keys, arguments: [value])
        }
        for master in try cluster.masterPorts() {
            let tag = try tag(servedBy: master, in: cluster)
            #expect(try await call(["\(tag):a", "\(tag):n"], "x") == .integer(1))
            #expect(try await call(["\(tag):a", "\(tag):n"], "y") == .integer(2))
            #expect(cluster.cli(master, ["FUNCTION", "LIST"]).contains("clustertests"), "the library was loaded on \(master)")
            #expect(cluster.cli(master, ["GET", "\(tag):a"]).hasPrefix("y"))
            let results = try await client.transaction([["INCR", "\(tag):n"], ["GET", "\(tag):a"]])
            #expect(results == [.integer(3), .bulk(Array("y".utf8))])
            let outcome = try await client.checkAndSet(watching: ["\(tag):n"]) { connection throws(RedisError) in
                let value = try await connection.send(["GET", "\(tag):n"]).int ?? 0
                return [["SET", "\(tag):n", String(value * 10)]]
            }
            #expect(outcome == .committed([.status("OK")]))
            #expect(cluster.cli(master, ["GET", "\(tag):n"]).hasPrefix("30"))
        }
        let tags = try cluster.masterPorts().prefix(2).map { try tag(servedBy: $0, in: cluster) }
        let crossSlot = await error { () throws(RedisError) in try await call(["\(tags[0]):a", "\(tags[1]):n"], "z") }
        #expect(crossSlot.map { if case .server(let message) = $0.kind { message.hasPrefix("CROSSSLOT") } else { false } } == true)
    }

    @Test func movedAfterASlotMigratedIsFollowed() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster)
        defer { client.close() }
        let key = "moved:key"
        let source = try cluster.masterPort(forKey: key)
        #expect(try await client.send(["PING"]) == .status("PONG"))  // the client has the map now
        let nodes = try cluster.nodes()
        let target = try #require(nodes.first { $0.isMaster && $0.port != source })
        let slot = try cluster.slot(of: key)
        for master in nodes where master.isMaster {
            #expect(cluster.cli(master.port, ["CLUSTER", "SETSLOT", String(slot), "NODE", target.id]).hasPrefix("OK"))
        }
        #expect(try await client.send(["SET", key, "moved"]) == .status("OK"))
        #expect(cluster.cli(target.port, ["GET", key]).hasPrefix("moved"))
        #expect(try await client.send(["GET", key]).string == "moved")
    }

    @Test func askDuringAMigrationIsFollowedWithoutChangingTheMap() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster)
        defer { client.close() }
        let key = "{ask}:migrated"
        #expect(try await client.send(["SET", key, "before"]) == .status("OK"))
        #expect(try await client.send(["SET", "{ask}:stays", "old"]) == .status("OK"))
        let source = try cluster.masterPort(forKey: key)
        let nodes = try cluster.nodes()
        let sourceID = try #require(nodes.first { $0.port == source }).id
        let target = try #require(nodes.first { $0.isMaster && $0.port != source })
        let slot = String(try cluster.slot(of: key))
        #expect(cluster.cli(target.port, ["CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID]).hasPrefix("OK"))
        #expect(cluster.cli(source, ["CLUSTER", "SETSLOT", slot, "MIGRATING", target.id]).hasPrefix("OK"))
        #expect(cluster.cli(source, ["MIGRATE", "127.0.0.1", String(target.port), key, "0", "5000"]).hasPrefix("OK"))

        // The key is on the target now, the slot still on the source: ASK, then ASKING + GET there.
        #expect(try await client.send(["GET", key]).string == "before")
        // A new key of the migrating slot goes to the target too...
        #expect(try await client.send(["SET", "{ask}:new", "fresh"]) == .status("OK"))
        #expect(cluster.cli(target.port, ["CLUSTER", "COUNTKEYSINSLOT", slot]).hasPrefix("2"))
        // ...while a key still on the source is served there, which shows the map still sends
        // the slot to the source.
        #expect(try await client.send(["GET", "{ask}:stays"]).string == "old")
        #expect(cluster.cli(source, ["CLUSTER", "COUNTKEYSINSLOT", slot]).hasPrefix("1"))
    }

    @Test func pubSubReachesSubscribersOnOtherNodesAndSurvivesTheirCrash() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster, seeds: 6)
        defer { client.close() }
        let subscription = try await client.subscribe(to: ["cluster:news"])
        let events = EventCollector(subscription)
        // Published on every node, received by the one subscriber wherever it is connected.
        for (index, port) in cluster.ports.enumerated() {
            _ = cluster.cli(port, ["PUBLISH", "cluster:news", "from \(index)"])
        }
        #expect(await events.wait(within: .seconds(10)) { $0.count == cluster.ports.count })
        _ = try await client.publish(channel: "cluster:news", message: "from the client")
        #expect(await events.wait(within: .seconds(10)) { $0.last?.text == "from the client" })

        let host = try #require(cluster.ports.first { cluster.cli($0, ["PUBSUB", "NUMSUB", "cluster:news"]).hasSuffix("1\n") })
        cluster.kill(host)
        #expect(await events.wait(within: .seconds(30)) { $0.contains(.resubscribed) })
        #expect(await publishUntilReceived(client, channel: "cluster:news", message: "after the crash", by: events))
        subscription.close()
    }

    @Test func blockingReadsGoToTheNodeOfTheirStream() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster)
        defer { client.close() }
        let masters = try cluster.masterPorts()
        let streams = try masters.prefix(2).map { "\(try tag(servedBy: $0, in: cluster)):stream" }
        let blocking = client.makeBlockingConnection()
        defer { blocking.close() }
        for (stream, master) in zip(streams, masters) {
            _ = try await client.send(["XADD", stream, "1-1", "n", "first"])
            let reader = Task { () throws(RedisError) in
                try await blocking.send(["XREAD", "BLOCK", "10000", "STREAMS", stream, "1-1"])
            }
            // The read is blocked on its node; a write to the same stream wakes it.
            let added = await eventually(within: .seconds(10)) { () throws(RedisError) in
                if !cluster.cli(master, ["CLIENT", "LIST"]).contains("cmd=xread") { throw RedisError(.timeout, endpoint: "", detail: "not blocked yet") }
            }
            #expect((try? added.get()) != nil)
            _ = try await client.send(["XADD", stream, "2-1", "n", "second"])
            let reply = try await reader.value
            #expect(reply.array?.first?.array?.first?.string == stream)
            #expect(cluster.cli(master, ["XLEN", stream]).hasPrefix("2"))
        }
    }

    @Test func afterAMasterCrashesTheClientServesItsSlotsFromThePromotedReplica() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster, seeds: 6)
        defer { client.close() }
        let victim = try cluster.masterPorts()[0]
        let tag = try tag(servedBy: victim, in: cluster)
        #expect(try await client.send(["SET", "\(tag):k", "before"]) == .status("OK"))
        cluster.kill(victim)
        let started = ContinuousClock.now
        let served = await eventually(within: .seconds(30)) { () throws(RedisError) in
            try await client.send(["SET", "\(tag):k", "after"])
        }
        #expect(try served.get() == .status("OK"))
        #expect(ContinuousClock.now - started < .seconds(30))
        let promoted = try await cluster.waitForFailover(of: victim)
        #expect(promoted != victim)
        #expect(cluster.cli(promoted, ["GET", "\(tag):k"]).hasPrefix("after"))
        #expect(try await client.send(["GET", "\(tag):k"]).string == "after")
        // Every other slot still works too.
        for index in 0..<50 { #expect(try await client.send(["SET", "after:\(index)", "v"]) == .status("OK")) }
    }

    @Test func waitConfirmsReplicationAndReportsWhenTheReplicaIsGone() async throws {
        let cluster = try await RedisCluster.start()
        let client = try makeClusterClient(cluster, waitReplicas: 1)
        defer { client.close() }
        let master = try cluster.masterPorts()[0]
        let tag = try tag(servedBy: master, in: cluster)
        let library = "#!lua name=waittests\nredis.register_function('waittests_incr', function(KEYS) return redis.call('INCR', KEYS[1]) end)"
        func increment(waiting: Bool) async throws(RedisError) -> RedisReply {
            try await client.call(function: "waittests_incr", library: library, keys: ["\(tag):n"], arguments: [], waitForReplicas: waiting)
        }
        #expect(try await increment(waiting: true) == .integer(1))  // loaded, called and waited for in one batch
        #expect(try await client.send(["SET", "\(tag):s", "replicated"], waitForReplicas: true) == .status("OK"))
        #expect(try await increment(waiting: false) == .integer(2))  // no wait asked

        for replica in try cluster.replicaPorts(ofMaster: master) { cluster.kill(replica) }
        // Polled: the master notices the killed replica's closed socket a moment later.
        let unreplicated = await eventually(within: .seconds(30)) { () throws(RedisError) -> RedisError in
            let failure = await error { () throws(RedisError) in try await increment(waiting: true) }
            guard let failure, failure.kind == .notReplicated(acknowledged: 0) else {
                throw RedisError(.timeout, endpoint: "", detail: "still acknowledged: \(String(describing: failure))")
            }
            return failure
        }
        #expect((try? unreplicated.get())?.isTransient == true)
        // The write did happen on the master.
        let counter = Int(cluster.cli(master, ["GET", "\(tag):n"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(counter >= 3)
    }
}
