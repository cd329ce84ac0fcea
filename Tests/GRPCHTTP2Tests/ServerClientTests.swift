// The server and the client against each other over real loopback sockets.
import EventLoop
import Foundation
import GRPCHTTP2
import GRPCProtos
import GRPCServices
import PlatformProtos
import Synchronization
import Testing

/// An OrderService whose behaviour each test chooses.
struct ScriptedOrderService: OrderServiceProvider {
    var place: @Sendable (PlaceOrderRequest, ServerContext) async throws -> PlaceOrderResponse = { request, _ in
        PlaceOrderResponse(orderId: "order_for_\(request.customerId)", status: "PLACED")
    }

    func placeOrder(_ request: PlaceOrderRequest, context: ServerContext) async throws -> PlaceOrderResponse {
        try await place(request, context)
    }

    func getOrderStatus(_ request: GetOrderStatusRequest, context: ServerContext) async throws -> GetOrderStatusResponse {
        throw RPCError(.notFound, "order '\(request.orderId)' not found")
    }

    func cancelOrder(_ request: CancelOrderRequest, context: ServerContext) async throws -> CancelOrderResponse {
        CancelOrderResponse(orderId: request.orderId, status: "CANCELED")
    }

    func recordRestaurantDecision(_ request: RecordRestaurantDecisionRequest, context: ServerContext) async throws -> RecordRestaurantDecisionResponse {
        RecordRestaurantDecisionResponse(orderId: request.orderId, status: request.decision)
    }

    func listOrders(_ request: ListOrdersRequest, context: ServerContext) async throws -> ListOrdersResponse {
        ListOrdersResponse()
    }

    func recordOrderReady(_ request: RecordOrderReadyRequest, context: ServerContext) async throws -> RecordOrderReadyResponse {
        RecordOrderReadyResponse(orderId: request.orderId, status: "ACCEPTED", kitchenStatus: "READY")
    }

    /// Three updates, the last final.
    func watchOrder(_ request: WatchOrderRequest, responses: RPCWriter<OrderUpdate>, context: ServerContext) async throws {
        for status in ["PLACED", "ACCEPTED", "REJECTED"] {
            try await responses.write(OrderUpdate(orderId: request.orderId, status: status, final: status == "REJECTED"))
        }
    }
}

/// A started server on a free port (the scripted OrderService, health, reflection and any extra
/// services) and a client channel to it.
struct Harness {
    let server: GRPCServer
    let channel: GRPCChannel
    let health: HealthService
    var client: OrderServiceClient { OrderServiceClient(transport: channel) }

    init(_ service: ScriptedOrderService = ScriptedOrderService(), extra: [ServiceDefinition] = [],
         configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 2)
        configure(&configuration)
        health = HealthService(services: [OrderServiceMethods.serviceName] + extra.map(\.name))
        let reflection = ReflectionService(files: PlatformProtosDescriptors.all, served: [OrderServiceMethods.serviceName])
        server = GRPCServer(configuration: configuration,
                            services: [service.service, health.service] + reflection.services + extra)
        try server.start()
        channel = GRPCChannel(host: "127.0.0.1", port: server.port)
    }

    func stop() async {
        channel.close()
        await server.shutdown(gracePeriod: .seconds(1))
    }
}

@Suite struct ServerClientTests {
    @Test func unaryCallSucceeds() async throws {
        let harness = try Harness()
        let response = try await harness.client.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["burger"], totalPrice: 3))
        #expect(response == PlaceOrderResponse(orderId: "order_for_c1", status: "PLACED"))
        await harness.stop()
    }

    @Test func servesIPv6() async throws {
        let server = GRPCServer(configuration: ServerConfiguration(host: "::1", port: 0, loopCount: 1),
                                services: [ScriptedOrderService().service])
        try server.start()
        let channel = GRPCChannel(host: "::1", port: server.port)
        let response = try await OrderServiceClient(transport: channel).placeOrder(PlaceOrderRequest(customerId: "v6"))
        #expect(response.orderId == "order_for_v6")
        channel.close()
        await server.shutdown(gracePeriod: .milliseconds(100))
    }

    @Test func errorsArriveWithCodeAndExactMessage() async throws {
        let harness = try Harness()
        await #expect(throws: RPCError(.notFound, "order 'café ✓ 100%' not found")) {
            try await harness.client.getOrderStatus(GetOrderStatusRequest(orderId: "café ✓ 100%"))
        }
        await harness.stop()
    }

    @Test func everyStatusCodeRoundTrips() async throws {
        let service = ScriptedOrderService(place: { request, _ in
            throw RPCError(StatusCode(rawValue: Int(request.totalPrice))!, "code \(Int(request.totalPrice))")
        })
        let harness = try Harness(service)
        for code in StatusCode.allCases where code != .ok {
            await #expect(throws: RPCError(code, "code \(code.rawValue)")) {
                try await harness.client.placeOrder(PlaceOrderRequest(totalPrice: Double(code.rawValue)))
            }
        }
        await harness.stop()
    }

    @Test func unknownMethodIsUnimplemented() async throws {
        let harness = try Harness()
        let error = await #expect(throws: RPCError.self) {
            try await harness.channel.unary(path: "/order_service.OrderService/Nope", request: [], options: CallOptions())
        }
        #expect(error?.code == .unimplemented)
        let unknownService = await #expect(throws: RPCError.self) {
            try await harness.channel.unary(path: "/nope.Nope/Nope", request: [], options: CallOptions())
        }
        #expect(unknownService?.code == .unimplemented)
        await harness.stop()
    }

    @Test func undecodableRequestIsInternalAndTheConnectionCarriesOn() async throws {
        let harness = try Harness()
        let error = await #expect(throws: RPCError.self) {
            try await harness.channel.unary(path: OrderServiceMethods.placeOrder.path, request: [0xFF, 0xFF, 0xFF], options: CallOptions())
        }
        #expect(error?.code == .internal)
        _ = try await harness.client.placeOrder(PlaceOrderRequest(customerId: "after"))
        await harness.stop()
    }

    @Test func metadataRoundTripsAsHeadersAndTrailers() async throws {
        let service = ScriptedOrderService(place: { _, context in
            for (name, value) in context.requestMetadata {
                context.addResponseHeader(name, value)
                context.addTrailer(name, value)
            }
            return PlaceOrderResponse(orderId: "o", status: "PLACED")
        })
        let harness = try Harness(service)
        var metadata = Metadata()
        metadata.add("x-text", "hello world")
        metadata.add("x-data-bin", bytes: [0, 1, 255, 10])
        let response = try await harness.channel.callWithMetadata(
            OrderServiceMethods.placeOrder, PlaceOrderRequest(), options: CallOptions(metadata: metadata))
        #expect(response.headers["x-text"] == "hello world")
        #expect(response.headers.bytes("x-data-bin") == [0, 1, 255, 10])
        #expect(response.trailers["x-text"] == "hello world")
        #expect(response.trailers.bytes("x-data-bin") == [0, 1, 255, 10])
        await harness.stop()
    }

    @Test func deadlineExceededCancelsTheHandler() async throws {
        let handlerCancelled = Mutex(false)
        let service = ScriptedOrderService(place: { _, context in
            #expect(context.deadline != nil)
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                handlerCancelled.withLock { $0 = true }
                throw error
            }
            return PlaceOrderResponse()
        })
        let harness = try Harness(service)
        let started = ContinuousClock.now
        let error = await #expect(throws: RPCError.self) {
            try await harness.client.placeOrder(PlaceOrderRequest(), options: CallOptions(timeout: .milliseconds(100)))
        }
        #expect(error?.code == .deadlineExceeded)
        #expect(ContinuousClock.now - started < .seconds(5))
        try await eventually { handlerCancelled.withLock { $0 } }
        await harness.stop()
    }

    @Test func cancellingTheCallerResetsTheStreamAndCancelsTheHandler() async throws {
        let handlerStarted = Mutex(false)
        let handlerCancelled = Mutex(false)
        let service = ScriptedOrderService(place: { _, _ in
            handlerStarted.withLock { $0 = true }
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                handlerCancelled.withLock { $0 = true }
                throw error
            }
            return PlaceOrderResponse()
        })
        let harness = try Harness(service)
        let call = Task { try await harness.client.placeOrder(PlaceOrderRequest()) }
        try await eventually { handlerStarted.withLock { $0 } }
        call.cancel()
        let result = await call.result
        #expect(throws: RPCError.self) { try result.get() }
        if case .failure(let error as RPCError) = result { #expect(error.code == .cancelled) }
        try await eventually { handlerCancelled.withLock { $0 } }
        await harness.stop()
    }

    @Test func aDeadlineOfCenturiesIsServedNormally() async throws {
        let harness = try Harness(ScriptedOrderService(place: { _, context in
            #expect(context.deadline != nil)
            return PlaceOrderResponse(orderId: "o", status: "PLACED")
        }))
        // Sent as grpc-timeout 99999999H, the largest the header can say.
        let response = try await harness.client.placeOrder(PlaceOrderRequest(), options: CallOptions(timeout: .seconds(Int64.max / 2)))
        #expect(response.orderId == "o")
        await harness.stop()
    }

    @Test func aTaskCancelledBeforeItsCallIsNeverSent() async throws {
        let calls = Mutex(0)
        let harness = try Harness(ScriptedOrderService(place: { _, _ in
            calls.withLock { $0 += 1 }
            return PlaceOrderResponse()
        }))
        let client = harness.client
        let call = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.placeOrder(PlaceOrderRequest())
        }
        let error = await #expect(throws: RPCError.self) { try await call.value }
        #expect(error?.code == .cancelled)
        _ = try await client.placeOrder(PlaceOrderRequest())  // the channel still works
        #expect(calls.withLock { $0 } == 1)
        await harness.stop()
    }

    @Test func callsOnAClosedChannelFailAtOnce() async throws {
        let harness = try Harness()
        _ = try await harness.client.placeOrder(PlaceOrderRequest())
        harness.channel.close()
        let error = await #expect(throws: RPCError.self) { try await harness.client.placeOrder(PlaceOrderRequest()) }
        #expect(error?.code == .unavailable)
        await harness.server.shutdown(gracePeriod: .milliseconds(100))
    }

    @Test func manyConcurrentCallsShareOneConnection() async throws {
        let service = ScriptedOrderService(place: { request, _ in
            try await Task.sleep(for: .milliseconds(Int(request.totalPrice)))
            return PlaceOrderResponse(orderId: request.customerId, status: "PLACED")
        })
        let harness = try Harness(service)
        let client = harness.client
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<1000 {
                group.addTask {
                    let response = try await client.placeOrder(PlaceOrderRequest(customerId: "c\(index)", totalPrice: Double(index % 20)))
                    #expect(response.orderId == "c\(index)")
                }
            }
            try await group.waitForAll()
        }
        await harness.stop()
    }

    @Test func oversizedRequestIsResourceExhausted() async throws {
        let harness = try Harness { $0.maxMessageSize = 1024 }
        let error = await #expect(throws: RPCError.self) {
            try await harness.client.placeOrder(PlaceOrderRequest(customerId: String(repeating: "x", count: 5000)))
        }
        #expect(error?.code == .resourceExhausted)
        _ = try await harness.client.placeOrder(PlaceOrderRequest(customerId: "small"))
        await harness.stop()
    }

    @Test func healthReportsServicesAndShutdown() async throws {
        let harness = try Harness()
        let health = HealthClient(transport: harness.channel)
        #expect(try await health.check(HealthCheckRequest(service: "")).status == .serving)
        #expect(try await health.check(HealthCheckRequest(service: OrderServiceMethods.serviceName)).status == .serving)
        await #expect(throws: RPCError(.notFound, "unknown service nope.Nope")) {
            try await health.check(HealthCheckRequest(service: "nope.Nope"))
        }
        await harness.stop()
    }

    @Test func noServerIsUnavailableQuickly() async throws {
        let (listener, port) = try Socket.listen(host: "127.0.0.1", port: 0)
        Socket.close(listener)  // the port is now free and nothing listens there
        let channel = GRPCChannel(host: "127.0.0.1", port: port)
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: channel).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
        channel.close()
    }

    @Test func clientReconnectsAfterTheServerComesBack() async throws {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 1)
        let first = GRPCServer(configuration: configuration, services: [ScriptedOrderService().service])
        try first.start()
        let port = first.port
        let channel = GRPCChannel(host: "127.0.0.1", port: port)
        let client = OrderServiceClient(transport: channel)
        _ = try await client.placeOrder(PlaceOrderRequest(customerId: "before"))
        await first.shutdown(gracePeriod: .milliseconds(100))
        let error = await #expect(throws: RPCError.self) { try await client.placeOrder(PlaceOrderRequest()) }
        #expect(error?.code == .unavailable)
        configuration.port = port
        let second = GRPCServer(configuration: configuration, services: [ScriptedOrderService().service])
        try second.start()
        #expect(try await client.placeOrder(PlaceOrderRequest(customerId: "after")).orderId == "order_for_after")
        channel.close()
        await second.shutdown(gracePeriod: .milliseconds(100))
    }

    @Test func gracefulShutdownLetsInFlightCallsFinish() async throws {
        let started = Mutex(false)
        let service = ScriptedOrderService(place: { _, _ in
            started.withLock { $0 = true }
            try await Task.sleep(for: .milliseconds(300))
            return PlaceOrderResponse(orderId: "finished", status: "PLACED")
        })
        let harness = try Harness(service)
        let call = Task { try await harness.client.placeOrder(PlaceOrderRequest()) }
        try await eventually { started.withLock { $0 } }
        await harness.server.shutdown(gracePeriod: .seconds(5))
        #expect(try await call.value.orderId == "finished")
        harness.channel.close()
    }
}

/// Waits until `condition` holds, failing after a generous bound (never a timing assertion).
func eventually(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
