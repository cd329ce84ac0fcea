// Streaming calls of all four kinds, our client against our server over real loopback sockets:
// ordering, status after messages, Trailers-Only errors, cancellation and deadlines reaching the
// handler, and flow control holding back a fast side instead of buffering for it. The test
// service reuses the platform's messages (the layer never looks inside them).
import GRPCHTTP2
import GRPCProtos
import GRPCServices
import PlatformProtos
import Synchronization
import Testing

/// What the test service's handlers did, for the tests to check.
final class Probe: Sendable {
    let writes = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let cancelled = Atomic<Bool>(false)
    let mayRead = Atomic<Bool>(false)
    /// The HandOver handler's writer, once it returned.
    let handedOver = Mutex<HandedOverWriter<OrderUpdate>?>(nil)
    /// The final status `whenEnded` gave the HandOver handler.
    let endStatus = Mutex<RPCError?>(nil)
    /// What the interceptor's `finished` heard, in order.
    let finished = Mutex<[RPCError]>([])
}

/// Tells the probe each status `finished` reports.
struct FinishRecorder: ServerInterceptor {
    let probe: Probe
    func intercept(_ request: (any GRPCMessage)?, context: ServerContext) async throws(RPCError) {}
    func finished(_ status: RPCError, request: (any GRPCMessage)?, response: @autoclosure () -> (any GRPCMessage)?,
                  context: ServerContext) {
        probe.finished.withLock { $0.append(status) }
    }
}

/// A streaming test service: requests and responses are OrderUpdates, whose
/// `updatedAtUnixMs` carries numbers and `driverId` padding.
enum StreamTest {
    static let name = "test.Streams"
    typealias Message = OrderUpdate
    static let count = MethodDescriptor<Message, Message>(service: name, method: "Count", kind: .serverStreaming)
    static let failAfter = MethodDescriptor<Message, Message>(service: name, method: "FailAfter", kind: .serverStreaming)
    static let forever = MethodDescriptor<Message, Message>(service: name, method: "Forever", kind: .serverStreaming)
    static let handOver = MethodDescriptor<Message, Message>(service: name, method: "HandOver", kind: .serverStreaming)
    static let sum = MethodDescriptor<Message, Message>(service: name, method: "Sum", kind: .clientStreaming)
    static let slowSum = MethodDescriptor<Message, Message>(service: name, method: "SlowSum", kind: .clientStreaming)
    static let echo = MethodDescriptor<Message, Message>(service: name, method: "Echo", kind: .bidirectionalStreaming)
    static let echoFirst = MethodDescriptor<Message, Message>(service: name, method: "EchoFirst", kind: .bidirectionalStreaming)

    static func service(_ probe: Probe) -> ServiceDefinition {
        ServiceDefinition(name: name, routes: [
            // N messages numbered 0..<N, each padded with `driverId` of the request's length.
            Route(serverStreaming: count) { request, responses, _ in
                let padding = String(repeating: "x", count: request.driverId.count)
                for index in 0..<request.updatedAtUnixMs {
                    try await responses.write(Message(driverId: padding, updatedAtUnixMs: index))
                    probe.writes.add(1, ordering: .relaxed)
                }
            },
            Route(serverStreaming: failAfter) { request, responses, _ in
                for index in 0..<request.updatedAtUnixMs { try await responses.write(Message(updatedAtUnixMs: index)) }
                var trailers = Metadata()
                trailers.add("why", "asked")
                throw RPCError(.aborted, "failed after \(request.updatedAtUnixMs) messages", metadata: trailers)
            },
            Route(serverStreaming: forever) { _, responses, _ in
                try await responses.write(Message(status: "started"))
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    probe.cancelled.store(true, ordering: .relaxed)
                    throw error
                }
            },
            // Sends "started", hands its responses over (a buffer limit of `updatedAtUnixMs`
            // bytes, when set) to the probe, which the test then drives, and returns.
            Route(serverStreaming: handOver) { request, responses, _ in
                try await responses.write(Message(status: "started"))
                let writer = request.updatedAtUnixMs > 0 ? responses.handOver(bufferLimit: Int(request.updatedAtUnixMs)) : responses.handOver()
                writer.whenEnded { status in probe.endStatus.withLock { $0 = status } }
                probe.handedOver.withLock { $0 = writer }
            }.intercepted(by: [FinishRecorder(probe: probe)]),
            Route(clientStreaming: sum) { requests, _ in
                var total: Int64 = 0
                var count = 0
                for try await message in requests {
                    total += message.updatedAtUnixMs
                    count += 1
                }
                return Message(status: "\(count)", updatedAtUnixMs: total)
            },
            Route(clientStreaming: slowSum) { requests, _ in
                while !probe.mayRead.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
                var count = 0
                for try await _ in requests {
                    count += 1
                    probe.reads.add(1, ordering: .relaxed)
                }
                return Message(status: "\(count)")
            },
            Route(bidirectionalStreaming: echo) { requests, responses, _ in
                for try await message in requests { try await responses.write(message) }
            },
            // Answers the first request and ends the call while the client may still be sending.
            Route(bidirectionalStreaming: echoFirst) { requests, responses, _ in
                var iterator = requests.makeAsyncIterator()
                if let first = try await iterator.next() { try await responses.write(first) }
            },
        ])
    }
}

extension Harness {
    init(probe: Probe) throws {
        try self.init(extra: [StreamTest.service(probe)])
    }
}

@Suite struct StreamingTests {
    @Test func serverStreamingDeliversEveryMessageInOrderThenOK() async throws {
        let harness = try Harness(probe: Probe())
        let numbers = try await harness.channel.serverStreaming(StreamTest.count, OrderUpdate(updatedAtUnixMs: 10_000)) { responses in
            var numbers: [Int64] = []
            for try await message in responses { numbers.append(message.updatedAtUnixMs) }
            return numbers
        }
        #expect(numbers == Array(0..<10_000))
        await harness.stop()
    }

    @Test func clientStreamingSeesEveryRequestThenTheHalfClose() async throws {
        let harness = try Harness(probe: Probe())
        let response = try await harness.channel.clientStreaming(StreamTest.sum) { requests in
            for index in 1...10_000 { try await requests.write(OrderUpdate(updatedAtUnixMs: Int64(index))) }
        }
        #expect(response.status == "10000")
        #expect(response.updatedAtUnixMs == 50_005_000)
        await harness.stop()
    }

    @Test func bidirectionalEchoesWhileBothSidesStream() async throws {
        let harness = try Harness(probe: Probe())
        let echoed = try await harness.channel.bidirectionalStreaming(StreamTest.echo, requests: { requests in
            for index in 0..<2_000 { try await requests.write(OrderUpdate(updatedAtUnixMs: Int64(index))) }
        }, onResponse: { responses in
            var echoed: [Int64] = []
            for try await message in responses { echoed.append(message.updatedAtUnixMs) }
            return echoed
        })
        #expect(echoed == Array(0..<2_000))
        await harness.stop()
    }

    @Test func aServerThatEndsFirstStopsAClientStillSending() async throws {
        let harness = try Harness(probe: Probe())
        let padding = String(repeating: "p", count: 16 * 1024)
        let echoed = try await harness.channel.bidirectionalStreaming(StreamTest.echoFirst, requests: { requests in
            // Far more than any window: without the server's reset this would wait for ever.
            for index in 0..<10_000 { try await requests.write(OrderUpdate(driverId: padding, updatedAtUnixMs: Int64(index))) }
        }, onResponse: { responses in
            var echoed: [Int64] = []
            for try await message in responses { echoed.append(message.updatedAtUnixMs) }
            return echoed
        })
        #expect(echoed == [0])
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "next")).orderId == "order_for_next")
        await harness.stop()
    }

    @Test func anErrorAfterMessagesArrivesAfterThem() async throws {
        let harness = try Harness(probe: Probe())
        let received = Mutex<[Int64]>([])
        let error = await #expect(throws: RPCError.self) {
            try await harness.channel.serverStreaming(StreamTest.failAfter, OrderUpdate(updatedAtUnixMs: 5)) { responses in
                for try await message in responses { received.withLock { $0.append(message.updatedAtUnixMs) } }
            }
        }
        #expect(received.withLock { $0 } == [0, 1, 2, 3, 4])
        #expect(error?.code == .aborted)
        #expect(error?.message == "failed after 5 messages")
        #expect(error?.metadata["why"] == "asked")
        await harness.stop()
    }

    @Test func anErrorBeforeAnyMessageIsTrailersOnly() async throws {
        let harness = try Harness(probe: Probe())
        let outcome: Result<Metadata, RPCError> = try await harness.channel.withStream(
            path: StreamTest.failAfter.path, options: CallOptions()
        ) { stream in
            try await stream.requests.write(OrderUpdate(updatedAtUnixMs: 0).serializedBytes())
            await stream.finishRequests()
            do throws(RPCError) {
                return .success(try await stream.responseHeaders())
            } catch {
                return .failure(error)
            }
        }
        // No response headers came: the status arrived alone, as Trailers-Only.
        #expect(outcome == .failure(RPCError(.aborted, "failed after 0 messages", metadata: { var m = Metadata(); m.add("why", "asked"); return m }())))
        await harness.stop()
    }

    @Test func cancellingTheClientCancelsTheHandler() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let started = Atomic<Bool>(false)
        let call = Task {
            try await harness.channel.serverStreaming(StreamTest.forever, OrderUpdate()) { responses in
                for try await _ in responses { started.store(true, ordering: .relaxed) }
            }
        }
        try await eventually { started.load(ordering: .relaxed) }
        call.cancel()
        _ = await call.result
        try await eventually { probe.cancelled.load(ordering: .relaxed) }
        // The connection still serves.
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "after")).orderId == "order_for_after")
        await harness.stop()
    }

    @Test func theDeadlineCoversTheWholeStream() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let first = Atomic<Bool>(false)
        let error = await #expect(throws: RPCError.self) {
            try await harness.channel.serverStreaming(StreamTest.forever, OrderUpdate(), options: CallOptions(timeout: .milliseconds(300))) { responses in
                for try await _ in responses { first.store(true, ordering: .relaxed) }
            }
        }
        let sawFirst = first.load(ordering: .relaxed)
        #expect(sawFirst)
        #expect(error?.code == .deadlineExceeded)
        try await eventually { probe.cancelled.load(ordering: .relaxed) }
        await harness.stop()
    }

    /// A handler that handed its responses over has returned, and the call goes on: what the
    /// new owner sends arrives, its `finish` sets the status, and only then do the interceptors
    /// hear that the call ended.
    @Test func aHandedOverCallGoesOnAfterItsHandlerReturned() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let received = Mutex<[String]>([])
        let call = Task {
            try await harness.channel.serverStreaming(StreamTest.handOver, OrderUpdate()) { responses in
                for try await message in responses { received.withLock { $0.append(message.status) } }
            }
        }
        try await eventually { probe.handedOver.withLock { $0 } != nil }
        let writer = try #require(probe.handedOver.withLock { $0 })
        try await eventually { received.withLock { $0 } == ["started"] }
        #expect(probe.finished.withLock { $0 }.isEmpty)
        for index in 0..<3 { #expect(writer.send(OrderUpdate(status: "later \(index)"))) }
        writer.finish()
        try await call.value
        #expect(received.withLock { $0 } == ["started", "later 0", "later 1", "later 2"])
        try await eventually { probe.endStatus.withLock { $0 } != nil }
        #expect(probe.endStatus.withLock { $0 }?.code == .ok)
        #expect(probe.finished.withLock { $0 }.map(\.code) == [.ok])
        #expect(!writer.send(OrderUpdate(status: "too late")))
        await harness.stop()
    }

    @Test func aHandedOverCallHearsTheClientCancel() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let started = Atomic<Bool>(false)
        let call = Task {
            try await harness.channel.serverStreaming(StreamTest.handOver, OrderUpdate()) { responses in
                for try await _ in responses { started.store(true, ordering: .relaxed) }
            }
        }
        try await eventually { started.load(ordering: .relaxed) && probe.handedOver.withLock { $0 } != nil }
        call.cancel()
        _ = await call.result
        try await eventually { probe.endStatus.withLock { $0 } != nil }
        #expect(probe.endStatus.withLock { $0 }?.code == .cancelled)
        #expect(probe.finished.withLock { $0 }.map(\.code) == [.cancelled])
        #expect(probe.handedOver.withLock { $0 }?.send(OrderUpdate(status: "nobody listens")) == false)
        await harness.stop()
    }

    /// Sending never waits, so a client that reads nothing must not make the queue grow: past the
    /// owner's limit the call ends with RESOURCE_EXHAUSTED, and the client learns it.
    @Test func aClientThatDoesNotReadEndsAHandedOverCall() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let limit = 64 * 1024
        let error = await #expect(throws: RPCError.self) {
            try await harness.channel.serverStreaming(StreamTest.handOver, OrderUpdate(updatedAtUnixMs: Int64(limit))) { responses in
                var iterator = responses.makeAsyncIterator()
                _ = try await iterator.next()
                try await eventually { probe.handedOver.withLock { $0 } != nil }
                let writer = try #require(probe.handedOver.withLock { $0 })
                let padding = String(repeating: "p", count: 16 * 1024)
                var accepted = 0
                // The windows on the way take some; then the queue fills to its limit.
                while accepted < 1_000, writer.send(OrderUpdate(driverId: padding)) { accepted += 1 }
                #expect(accepted < 1_000, "a client that reads nothing was sent \(accepted) messages of 16 KiB")
                try await eventually { probe.endStatus.withLock { $0 } != nil }
                while try await iterator.next() != nil {}
            }
        }
        #expect(error?.code == .resourceExhausted)
        #expect(probe.endStatus.withLock { $0 }?.code == .resourceExhausted)
        #expect(probe.finished.withLock { $0 }.map(\.code) == [.resourceExhausted])
        await harness.stop()
    }

    @Test func aClientThatDoesNotReadHoldsTheHandlerNotMemory() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let padding = String(repeating: "p", count: 16 * 1024)
        let count = try await harness.channel.serverStreaming(
            StreamTest.count, OrderUpdate(driverId: padding, updatedAtUnixMs: 1_000)
        ) { responses in
            // Read nothing for a while: the handler must stop after a few windows' worth.
            try await Task.sleep(for: .milliseconds(500))
            let writtenWhileStalled = probe.writes.load(ordering: .relaxed)
            // 16 KiB messages: the client's 64 KiB window and queue, the server's 64 KiB buffer.
            #expect(writtenWhileStalled < 40, "the handler wrote \(writtenWhileStalled) messages to a client that read none")
            var count = 0
            for try await _ in responses { count += 1 }
            return count
        }
        #expect(count == 1_000)
        await harness.stop()
    }

    @Test func aHandlerThatDoesNotReadHoldsTheClient() async throws {
        let probe = Probe()
        let harness = try Harness(probe: probe)
        let sent = Atomic<Int>(0)
        let padding = String(repeating: "p", count: 16 * 1024)
        let call = Task {
            try await harness.channel.clientStreaming(StreamTest.slowSum) { requests in
                for _ in 0..<1_000 {
                    try await requests.write(OrderUpdate(driverId: padding))
                    sent.add(1, ordering: .relaxed)
                }
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        let sentWhileStalled = sent.load(ordering: .relaxed)
        #expect(sentWhileStalled < 40, "the client sent \(sentWhileStalled) messages to a handler that read none")
        probe.mayRead.store(true, ordering: .relaxed)
        #expect(try await call.value.status == "1000")
        await harness.stop()
    }

    @Test func generatedClientWatchesAnOrder() async throws {
        let harness = try Harness()
        let statuses = try await harness.client.watchOrder(WatchOrderRequest(orderId: "o1")) { updates in
            var statuses: [String] = []
            for try await update in updates { statuses.append(update.status) }
            return statuses
        }
        #expect(statuses == ["PLACED", "ACCEPTED", "REJECTED"])
        await harness.stop()
    }

    @Test func healthWatchSendsChangesAndNotServingOnShutdown() async throws {
        let harness = try Harness()
        let health = HealthClient(transport: harness.channel)
        let seen = Mutex<[HealthCheckResponse.ServingStatus]>([])
        let watch = Task {
            try await health.watch(HealthCheckRequest(service: OrderServiceMethods.serviceName)) { updates in
                for try await update in updates { seen.withLock { $0.append(update.status) } }
            }
        }
        try await eventually { seen.withLock { $0 } == [.serving] }
        harness.health.setStatus(.notServing, for: OrderServiceMethods.serviceName)
        try await eventually { seen.withLock { $0 } == [.serving, .notServing] }
        harness.health.setStatus(.serving, for: OrderServiceMethods.serviceName)
        try await eventually { seen.withLock { $0 } == [.serving, .notServing, .serving] }
        harness.health.enterShutdown()
        try await watch.value  // the stream ends with OK right after NOT_SERVING
        #expect(seen.withLock { $0 } == [.serving, .notServing, .serving, .notServing])
        #expect(try await health.check(HealthCheckRequest(service: "")).status == .notServing)
        await harness.stop()
    }

    @Test func healthWatchOfAnUnknownServiceSaysServiceUnknown() async throws {
        let harness = try Harness()
        let health = HealthClient(transport: harness.channel)
        let first = try await health.watch(HealthCheckRequest(service: "nope.Nope")) { updates in
            var iterator = updates.makeAsyncIterator()
            return try await iterator.next()?.status
        }
        #expect(first == .serviceUnknown)
        await harness.stop()
    }

    @Test func reflectionListsAndDescribesFromTheEmbeddedDescriptors() async throws {
        let harness = try Harness()
        let reflection = ReflectionV1Alpha.ServerReflectionClient(transport: harness.channel)
        typealias Request = ReflectionV1Alpha.ServerReflectionRequest
        let answers = try await reflection.serverReflectionInfo(requests: { requests in
            try await requests.write(Request(messageRequest: .listServices("")))
            try await requests.write(Request(messageRequest: .fileContainingSymbol("order_service.OrderService")))
            try await requests.write(Request(messageRequest: .fileContainingSymbol("order_service.NoSuchThing")))
        }, onResponse: { responses in
            var answers: [ReflectionV1Alpha.ServerReflectionResponse.MessageResponse?] = []
            for try await response in responses { answers.append(response.messageResponse) }
            return answers
        })
        #expect(answers.count == 3)
        guard case .listServicesResponse(let list)? = answers[0] else {
            Issue.record("expected a service list, got \(String(describing: answers[0]))")
            return
        }
        #expect(Set(list.service.map(\.name)) == [
            OrderServiceMethods.serviceName, HealthMethods.serviceName,
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        ])
        guard case .fileDescriptorResponse(let files)? = answers[1] else {
            Issue.record("expected descriptors, got \(String(describing: answers[1]))")
            return
        }
        #expect(files.fileDescriptorProto.first == PlatformProtosDescriptors.orderService.serialized)
        guard case .errorResponse(let error)? = answers[2] else {
            Issue.record("expected an error, got \(String(describing: answers[2]))")
            return
        }
        #expect(error.errorCode == Int32(StatusCode.notFound.rawValue))
        await harness.stop()
    }
}
