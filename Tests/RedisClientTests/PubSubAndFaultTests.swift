// Pub/Sub round trips, and what happens when Redis is missing, restarted or refuses us.
import RedisClient
import Testing
import TestSupport

@Suite struct PubSubTests {
    @Test func publishedMessagesReachEverySubscriber() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let first = try await client.subscribe(to: ["ps:a", "ps:b"])
        let second = try await client.subscribe(to: ["ps:a"])
        let firstEvents = EventCollector(first)
        let secondEvents = EventCollector(second)

        #expect(try await client.publish(channel: "ps:a", message: "hello") == 2)
        #expect(try await client.publish(channel: "ps:b", message: [0, 1, 0]) == 1)
        #expect(await firstEvents.wait { $0.count == 2 })
        #expect(firstEvents.all == [.message(channel: "ps:a", payload: Array("hello".utf8)), .message(channel: "ps:b", payload: [0, 1, 0])])
        #expect(await secondEvents.wait { $0.count == 1 })
        #expect(secondEvents.all.first?.text == "hello")
        first.close()
        second.close()
        await firstEvents.finished()
        await secondEvents.finished()
    }

    @Test func closingUnsubscribes() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let subscription = try await client.subscribe(to: ["unsub:c"])
        let events = EventCollector(subscription)
        #expect(try await client.publish(channel: "unsub:c", message: "one") == 1)
        #expect(await events.wait { $0.count == 1 })
        subscription.close()
        await events.finished()
        let gone = await eventually { () throws(RedisError) in
            let receivers = try await client.publish(channel: "unsub:c", message: "two")
            if receivers != 0 { throw RedisError(.timeout, endpoint: "", detail: "still subscribed") }
        }
        #expect((try? gone.get()) != nil)
        #expect(events.all.count == 1)
    }

    @Test func cancellingTheIteratingTaskUnsubscribes() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        let subscription = try await client.subscribe(to: ["cancel:c"])
        let consumer = Task { for await _ in subscription {} }
        #expect(try await client.publish(channel: "cancel:c", message: "x") == 1)
        consumer.cancel()
        await consumer.value
        let gone = await eventually { () throws(RedisError) in
            if try await client.publish(channel: "cancel:c", message: "y") != 0 {
                throw RedisError(.timeout, endpoint: "", detail: "still subscribed")
            }
        }
        #expect((try? gone.get()) != nil)
    }
}

@Suite struct FaultTests {
    @Test func restartedServer_commandsFailFastThenRecover_subscriberResubscribes() async throws {
        let server = try await RedisServer.started()
        let client = makeClient(server)
        defer { client.close() }
        _ = try await client.send(["SET", "fault:k", "before"])
        let subscription = try await client.subscribe(to: ["fault:c"])
        let events = EventCollector(subscription)

        server.kill()
        for _ in 0..<3 {
            let started = ContinuousClock.now
            let failure = await error { () throws(RedisError) in try await client.send(["GET", "fault:k"]) }
            #expect(failure?.kind == .unavailable)
            // Fast means at the refused connect, not after the 5 s command timeout (the bound is
        // generous: under a loaded test run the scheduler alone can take a second or two).
        #expect(ContinuousClock.now - started < .seconds(4))
        }
        #expect(await events.wait { $0.contains { if case .connectionLost = $0 { true } else { false } } })

        try await server.relaunch()
        let recovered = await eventually { () throws(RedisError) in try await client.send(["SET", "fault:k", "after"]) }
        #expect(try recovered.get() == .status("OK"))
        #expect(await events.wait { $0.contains(.resubscribed) })
        #expect(try await client.publish(channel: "fault:c", message: "after restart") == 1)
        #expect(await events.wait { $0.last?.text == "after restart" })
        subscription.close()
    }

    @Test func nothingListeningFailsFastWithUnavailable() async throws {
        let port = try RedisServer.freePort()
        let client = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: port))
        defer { client.close() }
        let started = ContinuousClock.now
        let failure = await error { () throws(RedisError) in try await client.send(["PING"]) }
        #expect(failure?.kind == .unavailable)
        #expect(failure?.description.contains("127.0.0.1:\(port)") == true)
        // Fast means at the refused connect, not after the 5 s command timeout (the bound is
        // generous: under a loaded test run the scheduler alone can take a second or two).
        #expect(ContinuousClock.now - started < .seconds(4))
        let subscribeFailure = await error { () throws(RedisError) in try await client.subscribe(to: ["nobody"]) }
        #expect(subscribeFailure?.kind == .unavailable)
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        let server = try await RedisServer.started(password: "s3cret")
        let wrong = makeClient(server, password: "wrong")
        defer { wrong.close() }
        let failure = await error { () throws(RedisError) in try await wrong.send(["PING"]) }
        guard case .authentication(let message)? = failure?.kind else {
            Issue.record("expected an authentication error, got \(String(describing: failure))")
            return
        }
        #expect(message.hasPrefix("WRONGPASS"))

        let right = makeClient(server)
        defer { right.close() }
        #expect(try await right.send(["PING"]) == .status("PONG"))

        let anonymous = RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port))
        defer { anonymous.close() }
        let noAuth = await error { () throws(RedisError) in try await anonymous.send(["GET", "x"]) }
        #expect(noAuth.map { if case .server(let m) = $0.kind { m.hasPrefix("NOAUTH") } else { false } } == true)
    }

    @Test func passwordAndDatabaseAreRestoredOnReconnect() async throws {
        let server = try await RedisServer.started(password: "pw")
        let client = RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port, password: "pw", database: 3))
        defer { client.close() }
        _ = try await client.send(["SET", "db:k", "in three"])
        server.stop()
        try await server.relaunch()
        let recovered = await eventually { () throws(RedisError) in try await client.send(["CLIENT", "INFO"]) }
        #expect(try recovered.get().string?.contains("db=3") == true)
    }
}
