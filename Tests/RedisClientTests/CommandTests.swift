// Commands against a real redis-server: every reply type, binary safety, many concurrent
// callers on the one pipelined connection, transactions and scripts.
import RedisClient
import Testing
import TestSupport

@Suite struct CommandTests {
    @Test func everyReplyType() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }

        #expect(try await client.send(["SET", "types:s", "hello"]) == .status("OK"))
        #expect(try await client.send(["GET", "types:s"]) == .bulk(Array("hello".utf8)))
        #expect(try await client.send(["GET", "types:s"]).string == "hello")
        #expect(try await client.send(["GET", "types:missing"]) == .null)
        #expect(try await client.send(["INCRBY", "types:n", "41"]) == .integer(41))
        #expect(try await client.send(["GET", "types:n"]).int == 41)
        _ = try await client.send(["RPUSH", "types:l", "a", "b"])
        #expect(try await client.send(["LRANGE", "types:l", "0", "-1"]) == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
        #expect(try await client.send(["MGET", "types:s", "types:missing"]).array == [.bulk(Array("hello".utf8)), .null])
        #expect(try await client.send(["SET", "types:e", ""]) == .status("OK"))
        #expect(try await client.send(["GET", "types:e"]) == .bulk([]))

        let wrongType = await error { () throws(RedisError) in try await client.send(["LPUSH", "types:s", "x"]) }
        guard case .server(let message)? = wrongType?.kind else {
            Issue.record("expected a server error, got \(String(describing: wrongType))")
            return
        }
        #expect(message.hasPrefix("WRONGTYPE"))
        #expect(wrongType!.description.contains("127.0.0.1:\(server.port)"))
    }

    @Test func binaryPayloadsWithNULBytesRoundTrip() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let key: [UInt8] = Array("bin:".utf8) + [0, 1, 0]
        let value: [UInt8] = [0, 255, 0, 10, 13, 0] + Array(0...255)
        #expect(try await client.send([Array("SET".utf8), key, value]) == .status("OK"))
        #expect(try await client.send([Array("GET".utf8), key]) == .bulk(value))
        #expect(try await client.send([Array("STRLEN".utf8), key]) == .integer(Int64(value.count)))
    }

    @Test func tenThousandConcurrentCommandsAreAnsweredInOrderPerCaller() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<100 {
                group.addTask {
                    for step in 1...50 {
                        let count = try await client.send(["INCR", "load:\(task):counter"])
                        #expect(count == .integer(Int64(step)))
                        let value = "task \(task) step \(step)"
                        _ = try await client.send(["SET", "load:\(task):value", value])
                        #expect(try await client.send(["GET", "load:\(task):value"]).string == value)
                    }
                }
            }
            try await group.waitForAll()
        }
        // And 10,000 in flight at once.
        let replies = try await withThrowingTaskGroup(of: (Int, Int64?).self) { group in
            for index in 0..<10_000 {
                group.addTask { (index, try await client.send(["INCR", "load:burst"]).int) }
            }
            var seen: [Int64] = []
            for try await (_, value) in group { seen.append(value ?? -1) }
            return seen
        }
        #expect(replies.sorted() == Array(1...10_000))
    }

    @Test func multiExecIsAtomicAndKeepsErrorsAsValues() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let results = try await client.transaction([["INCR", "tx:n"], ["INCR", "tx:n"], ["GET", "tx:n"]])
        #expect(results == [.integer(1), .integer(2), .bulk(Array("2".utf8))])

        let mixed = try await client.transaction([["SET", "tx:s", "x"], ["LPUSH", "tx:s", "y"], ["GET", "tx:s"]])
        #expect(mixed?.count == 3)
        if case .error(let message)? = mixed?[1] { #expect(message.hasPrefix("WRONGTYPE")) } else { Issue.record("no error value") }
        #expect(mixed?[2] == .bulk(Array("x".utf8)))

        // Concurrent batches never interleave: each sees its own two increments back to back.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    let pair = try await client.transaction([["INCR", "tx:pair"], ["INCR", "tx:pair"]])
                    let values = pair?.compactMap(\.int) ?? []
                    #expect(values.count == 2 && values[1] == values[0] + 1 && values[1] % 2 == 0)
                }
            }
            try await group.waitForAll()
        }
        let queueError = await error { () throws(RedisError) in try await client.transaction([["SET", "tx:bad"]]) }
        #expect(queueError.map { if case .server(let m) = $0.kind { m.hasPrefix("EXECABORT") } else { false } } == true)
    }

    @Test func watchConflictGivesNilAndCheckAndSetRetries() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        let other = makeClient(server)
        defer { client.close(); other.close() }
        _ = try await client.send(["SET", "cas:k", "1"])

        let conflicted = try await client.checkAndSet(watching: ["cas:k"]) { connection throws(RedisError) in
            let current = try await connection.send(["GET", "cas:k"]).int ?? 0
            _ = try await other.send(["SET", "cas:k", "100"])  // a concurrent writer
            return [["SET", "cas:k", String(current + 1)]]
        }
        #expect(conflicted == .conflict)
        #expect(try await client.send(["GET", "cas:k"]).int == 100)

        let aborted = try await client.checkAndSet(watching: ["cas:k"]) { _ throws(RedisError) in nil }
        #expect(aborted == .aborted)

        let committed = try await client.transaction(watching: ["cas:k"], [["INCR", "cas:k"]])
        #expect(committed == [.integer(101)])

        // Many tasks incrementing by check-and-set, retrying on conflict, lose no update.
        _ = try await client.send(["SET", "cas:counter", "0"])
        let clients = [client, other]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<20 {
                group.addTask {
                    let client = clients[task % 2]
                    for _ in 0..<5 {
                        while true {
                            let outcome = try await client.checkAndSet(watching: ["cas:counter"]) { connection throws(RedisError) in
                                let value = try await connection.send(["GET", "cas:counter"]).int ?? 0
                                return [["SET", "cas:counter", String(value + 1)]]
                            }
                            if case .committed = outcome { break }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await client.send(["GET", "cas:counter"]).int == 100)
    }

    @Test func functionsAreLoadedOnFirstUseAndAgainAfterAFlush() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let library = """
            #!lua name=commandtests
            redis.register_function('commandtests_incr', function(KEYS, ARGV) return redis.call('INCRBY', KEYS[1], ARGV[1]) end)
            redis.register_function('commandtests_shape', function() return {1, 'two', {ok='fine'}} end)
            redis.register_function('commandtests_fail', function() return redis.error_reply('NOPE broken') end)
            """
        func call(_ function: String, keys: [String] = [], arguments: [String] = []) async throws(RedisError) -> RedisReply {
            try await client.call(function: "commandtests_\(function)", library: library, keys: keys, arguments: arguments)
        }
        #expect(try await call("incr", keys: ["lua:n"], arguments: ["5"]) == .integer(5))
        #expect(try await call("incr", keys: ["lua:n"], arguments: ["5"]) == .integer(10))
        #expect(try await client.send(["FUNCTION", "FLUSH"]) == .status("OK"))
        #expect(try await call("incr", keys: ["lua:n"], arguments: ["5"]) == .integer(15))
        #expect(try await call("shape") == .array([.integer(1), .bulk(Array("two".utf8)), .status("fine")]))
        let failure = await error { () throws(RedisError) in try await call("fail") }
        #expect(failure?.kind == .server("NOPE broken"))
        let broken = await error { () throws(RedisError) in
            try await client.call(function: "nothing_here", library: "#!lua name=nothing\nthis is not Lua", keys: [], arguments: [])
        }
        #expect(broken.map { if case .server = $0.kind { true } else { false } } == true, "a library that does not load is an error")
    }

    @Test func slowCommandTimesOutAndTheClientRecovers() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server, commandTimeout: .milliseconds(300))
        defer { client.close() }
        _ = try await client.send(["PING"])
        let blocked = await error { () throws(RedisError) in try await client.send(["BLPOP", "timeout:empty", "2"]) }
        #expect(blocked?.kind == .timeout)
        let recovered = await eventually { () throws(RedisError) in try await client.send(["PING"]) }
        #expect(try recovered.get() == .status("PONG"))
    }
}

@Suite struct LifecycleTests {
    @Test func aClosedClientFailsAtOnce() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        #expect(try await client.send(["PING"]) == .status("PONG"))
        client.close()
        client.close()
        #expect(await error { () throws(RedisError) in try await client.send(["PING"]) }?.kind == .unavailable)
        #expect(await error { () throws(RedisError) in try await client.subscribe(to: ["x"]) }?.kind == .unavailable)
    }
}
