// The one harness of the service tests: a real redis-server, the three services in-process as
// real GRPCServers on 127.0.0.1 (port 0), and typed clients over real sockets; plus the few
// helpers every test file uses (polling, status codes, placing and accepting orders).
//
// Every node (a service's logic, its server and its own RedisClient) can be stopped and started
// again against the same Redis, the way a container restart would, and extra delivery replicas
// can be started next to the first. Each test builds its own Platform, so tests never share
// Redis state and can run in parallel.
import CallerTokens
import DeliveryLogic
import Foundation
import GRPCHTTP2
import Logging
import OrderLogic
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient
import RestaurantLogic
import Synchronization
import Testing
import TestSupport

/// Logs nothing: the services log every decision and the test output would drown.
let quietLogger = Logger(label: "services-tests") { _ in SwiftLogNoOpLogHandler() }

/// One running service: its server, the Redis client it owns, and how to stop its logic.
final class ServiceNode: Sendable {
    let server: GRPCServer
    let redis: RedisClient
    private let stopLogic: @Sendable () async -> Void
    private let extraChannels: [GRPCChannel]

    fileprivate init(service: ServiceDefinition, redis: RedisClient, extraChannels: [GRPCChannel] = [],
                     interceptors: [any ServerInterceptor] = [], stopLogic: @escaping @Sendable () async -> Void) throws {
        server = GRPCServer(configuration: ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 1),
                            services: [service], interceptors: interceptors, logger: quietLogger)
        self.redis = redis
        self.stopLogic = stopLogic
        self.extraChannels = extraChannels
        try server.start()
    }

    var port: Int { server.port }

    /// Dies the way a killed process does, for the others' sake: its Redis connections close at
    /// once and its server stops answering, with nothing finished or handed over.
    func crash() async {
        redis.close()
        await server.shutdown(gracePeriod: .zero)
        extraChannels.forEach { $0.close() }
    }

    /// Stops the logic, then the server, then closes the node's connections. Idempotent.
    func stop() async {
        await stopLogic()
        await server.shutdown(gracePeriod: .milliseconds(200))
        extraChannels.forEach { $0.close() }
        redis.close()
    }
}

/// RestaurantMenuCatalog on whichever restaurant service the platform runs at the time of a call.
private struct CurrentRestaurantCatalog: MenuCatalog {
    let platform: Platform

    func menu(of restaurant: String, context: ServerContext) async throws(RPCError) -> GetMenuResponse? {
        try await platform.restaurantCatalog().menu(of: restaurant, context: context)
    }
}

/// Redis plus the three services, and clients to each.
final class Platform: Sendable {
    let redisServer: RedisServer
    /// How every node (and the test's own client) reaches Redis: the platform's server, unless
    /// the test brought a deployment of its own (Sentinel).
    let redisConfiguration: RedisConfiguration
    /// The test's own view of Redis: inspect keys, subscribe to events.
    let redis: RedisClient
    let drivers: [String]
    /// With `auth`, the services require tokens signed by this key (AUTH=required).
    let keys: TestKeys?
    private let state: Mutex<(order: ServiceNode?, restaurant: ServiceNode?, deliveries: [ServiceNode], channels: [GRPCChannel])>
    /// The catalog the order services use, on one channel per restaurant service instance.
    private let catalog = Mutex<(port: Int, catalog: RestaurantMenuCatalog)?>(nil)

    /// Starts Redis and the three services; `drivers` is the delivery service's pool; `auth`
    /// installs the access policy on every service, as `AUTH=required` does.
    init(drivers: [String] = [], auth: Bool = false, redis configuration: RedisConfiguration? = nil, waitReplicas: Int = 0) async throws {
        redisServer = try await RedisServer.started()
        // The read cache on, as the services run by default (smaller, so evictions happen too).
        redisConfiguration = configuration ?? RedisConfiguration(host: redisServer.host, port: redisServer.port,
                                                                 waitReplicas: waitReplicas, waitTimeout: .milliseconds(100),
                                                                 readCacheCapacity: 1_000)
        redis = RedisClient(configuration: redisConfiguration)
        self.drivers = drivers
        keys = auth ? try TestKeys() : nil
        state = Mutex((nil, nil, [], []))
        let order = try await startOrderService()
        state.withLock { $0.order = order }
        let restaurant = try startRestaurantService(orderPort: order.port)
        state.withLock { $0.restaurant = restaurant }
        _ = try await startDeliveryService()
    }

    // MARK: - Nodes

    /// The order services' way to the current restaurant service (started after them: each call
    /// goes to the instance running then), as the token holder the platform's keys give.
    var menuCatalog: any MenuCatalog { CurrentRestaurantCatalog(platform: self) }

    private func nodeRedis() -> RedisClient {
        RedisClient(configuration: redisConfiguration)
    }

    /// A new OrderService instance against the platform's Redis.
    func startOrderService() async throws -> ServiceNode {
        let redis = nodeRedis()
        let logic = OrderServiceLogic(redis: redis, menus: menuCatalog, logger: quietLogger)
        await logic.start()
        // As order-service's main does before it drains: the watches end first.
        return try ServiceNode(service: logic.service, redis: redis, interceptors: policy(parties: logic)) {
            logic.endWatches()
            await logic.stop()
        }
    }

    /// A new RestaurantService instance reaching the order service at `orderPort`.
    func startRestaurantService(orderPort: Int) throws -> ServiceNode {
        let redis = nodeRedis()
        let orderChannel = GRPCChannel(host: "127.0.0.1", port: orderPort)
        let logic = RestaurantServiceLogic(redis: redis, orders: OrderServiceClient(transport: orderChannel),
                                           serviceToken: keys.map { ServiceTokenFile(path: $0.serviceTokenFile) }, logger: quietLogger)
        return try ServiceNode(service: logic.service, redis: redis, extraChannels: [orderChannel],
                               interceptors: policy(parties: nil)) {}
    }

    /// Starts one more DeliveryService instance (a replica, or the one after a restart).
    @discardableResult
    func startDeliveryService() async throws -> ServiceNode {
        let redis = nodeRedis()
        let logic = DeliveryServiceLogic(redis: redis, drivers: drivers, logger: quietLogger)
        await logic.start()
        let node = try ServiceNode(service: logic.service, redis: redis, interceptors: policy(parties: logic)) { await logic.stop() }
        state.withLock { $0.deliveries.append(node) }
        return node
    }

    /// Stops every running delivery instance (the delivery service is down until the next start).
    func stopDeliveryServices() async {
        let nodes = state.withLock { state in
            defer { state.deliveries = [] }
            return state.deliveries
        }
        for node in nodes { await node.stop() }
    }

    /// Stops the order service (the restaurant service keeps pointing at its old port).
    func stopOrderService() async {
        await state.withLock { $0.order }?.stop()
    }

    /// Replaces the order service by a new instance against the same Redis.
    func restartOrderService() async throws {
        await stopOrderService()
        let order = try await startOrderService()
        state.withLock { $0.order = order }
    }

    /// A catalog reaching the restaurant service running now.
    fileprivate func restaurantCatalog() -> RestaurantMenuCatalog {
        let port = state.withLock { $0.restaurant?.port ?? 1 }
        if let cached = catalog.withLock({ $0 }), cached.port == port { return cached.catalog }
        let made = RestaurantMenuCatalog(restaurants: restaurants, token: keys.map { ServiceTokenFile(path: $0.serviceTokenFile) },
                                         logger: quietLogger)
        catalog.withLock { $0 = (port, made) }
        return made
    }

    /// The access policy, when the platform requires tokens.
    private func policy(parties: (any OrderPartiesLookup)?) -> [any ServerInterceptor] {
        guard let keys else { return [] }
        return [AccessPolicy(tokens: TokenCache(verifier: TokenVerifier(keys: keys.publicKeys)), parties: parties, logger: quietLogger)]
    }

    func shutdown() async {
        let (order, restaurant, deliveries, channels) = state.withLock { ($0.order, $0.restaurant, $0.deliveries, $0.channels) }
        channels.forEach { $0.close() }
        for node in deliveries { await node.stop() }
        await restaurant?.stop()
        await order?.stop()
        redis.close()
        redisServer.stop()
    }

    // MARK: - Clients

    private func channel(to node: ServiceNode?) -> GRPCChannel {
        let channel = GRPCChannel(host: "127.0.0.1", port: node?.port ?? 1)
        state.withLock { $0.channels.append(channel) }
        return channel
    }

    /// A client of the current order service instance.
    var orders: OrderServiceClient { OrderServiceClient(transport: channel(to: state.withLock { $0.order })) }
    var restaurants: RestaurantServiceClient { RestaurantServiceClient(transport: channel(to: state.withLock { $0.restaurant })) }
    /// A client of the first running delivery instance.
    var deliveries: DeliveryServiceClient { DeliveryServiceClient(transport: channel(to: state.withLock { $0.deliveries.first })) }
    func orders(of node: ServiceNode) -> OrderServiceClient { OrderServiceClient(transport: channel(to: node)) }
    func deliveries(of node: ServiceNode) -> DeliveryServiceClient { DeliveryServiceClient(transport: channel(to: node)) }

    // MARK: - Common steps

    /// Places an order (for `restaurant` when given) and returns its id.
    func placeOrder(customer: String = "customer-1", items: [String] = ["pizza"], total: Double = 12.5,
                    restaurant: String = "") async throws -> String {
        try await orders.placeOrder(PlaceOrderRequest(customerId: customer, items: items, totalPrice: total,
                                                      restaurantId: restaurant)).orderId
    }

    /// Places an order and has `restaurant` accept it through the restaurant service.
    func placeAcceptedOrder(restaurant: String = "restaurant-1") async throws -> String {
        let id = try await placeOrder(restaurant: restaurant)
        let response = try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: restaurant, orderId: id))
        #expect(response.status == "ACCEPTED")
        return id
    }

    func orderStatus(_ id: String) async throws -> String {
        try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)).status
    }

    /// Every assignment of every pool driver (or of driver_auto without a pool).
    func allAssignments() async throws -> [DeliveryAssignment] {
        var all: [DeliveryAssignment] = []
        for driver in drivers.isEmpty ? [DeliveryServiceLogic.defaultDriver] : drivers {
            all += try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver)).assignments
        }
        return all
    }

    /// The events on all partitions' streams.
    func streamLength() async throws -> Int64 {
        var length: Int64 = 0
        for partition in OrderPartition.all { length += try await redis.send(["XLEN", partition.stream]).int ?? 0 }
        return length
    }

    /// Every event, partition by partition, each partition's in stream order (so each order's
    /// events are in order).
    func streamEvents() async throws -> [PlatformEvent] {
        var events: [PlatformEvent] = []
        for partition in OrderPartition.all {
            for entry in try await redis.send(["XRANGE", partition.stream, "-", "+"]).array ?? [] {
                guard let parts = entry.array, parts.count == 2, let id = parts[0].string,
                      let event = PlatformEvent(entryID: id, fields: (parts[1].array ?? []).map(\.string)) else { continue }
                events.append(event)
            }
        }
        return events
    }

    /// The entries `group` has handed out and not had acknowledged, over all partitions.
    func pendingEvents(of group: String) async throws -> Int64 {
        var pending: Int64 = 0
        for partition in OrderPartition.all {
            pending += try await redis.send(["XPENDING", partition.stream, group]).array?.first?.int ?? 0
        }
        return pending
    }
}

/// Runs `body` against a fresh platform and always tears it down.
func withPlatform(drivers: [String] = [], auth: Bool = false, redis: RedisConfiguration? = nil, waitReplicas: Int = 0,
                  _ body: (Platform) async throws -> Void) async throws {
    let platform = try await Platform(drivers: drivers, auth: auth, redis: redis, waitReplicas: waitReplicas)
    do {
        try await body(platform)
    } catch {
        await platform.shutdown()
        throw error
    }
    await platform.shutdown()
}

/// Polls `condition` every 20 ms until it holds; records an issue if it does not within `timeout`.
/// Errors thrown by `condition` count as "not yet" (e.g. Redis still coming back). The default
/// is generous: under the parallel suites a loaded machine has stalled the platform for seconds.
func eventually(_ what: String, within timeout: Duration = .seconds(15),
                sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async throws -> Bool) async {
    let deadline = ContinuousClock.now + timeout
    while true {
        if (try? await condition()) == true { return }
        guard ContinuousClock.now < deadline else {
            Issue.record("\(what): not met within \(timeout)", sourceLocation: sourceLocation)
            return
        }
        try? await Task.sleep(for: .milliseconds(20))
    }
}

/// Runs `body` with an EventHub whose Redis client points at no server: for unit tests of a
/// service's logic, which open no watch.
func withUnreachableHub(_ body: (EventHub) async throws -> Void) async throws {
    let unreachable = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: 1))
    defer { unreachable.close() }
    try await body(EventHub(redis: unreachable, logger: quietLogger))
}

/// The status code `body` failed with, or nil if it succeeded.
func statusCode<T>(sourceLocation: SourceLocation = #_sourceLocation, of body: () async throws -> T) async -> StatusCode? {
    await rpcError(sourceLocation: sourceLocation, of: body)?.code
}

/// The status `body` failed with, or nil if it succeeded.
func rpcError<T>(sourceLocation: SourceLocation = #_sourceLocation, of body: () async throws -> T) async -> RPCError? {
    do {
        _ = try await body()
        return nil
    } catch let error as RPCError {
        return error
    } catch {
        Issue.record("not an RPCError: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Ids every id field must refuse: empty, 129 characters, a space, non-ASCII letters, a slash.
let invalidIdentifiers = ["", String(repeating: "a", count: 129), "has space", "café", "ü", "a/b", "../x", "a:b", "日本"]

/// Collects what is published on `order_events` while a test runs.
final class EventRecorder: Sendable {
    private final class Messages: Sendable {
        let list = Mutex<[String]>([])
    }
    private let subscription: RedisSubscription
    private let received = Messages()
    private let task: Task<Void, Never>
    private let platform: Platform

    init(_ platform: Platform) async throws {
        let subscription = try await platform.redis.subscribe(to: ["order_events"])
        let received = self.received
        task = Task {
            for await event in subscription {
                if let text = event.text { received.list.withLock { $0.append(text) } }
            }
        }
        self.subscription = subscription
        self.platform = platform
    }

    /// Everything published so far: publishes a marker and waits for it, so whatever was published
    /// before this call has arrived; the marker itself is left out.
    func publishedSoFar() async throws -> [String] {
        let marker = "TEST_MARKER:\(UInt64.random(in: 0...UInt64.max))"
        try await platform.redis.publish(channel: "order_events", message: marker)
        await eventually("marker \(marker) received") { received.list.withLock { $0.contains(marker) } }
        return received.list.withLock { $0 }.filter { !$0.hasPrefix("TEST_MARKER:") }
    }

    func close() async {
        subscription.close()
        await task.value
    }
}

/// A throwaway Ed25519 signing key (made with the openssl command, as an operator would) and the
/// restaurant service's token, in a temporary directory.
final class TestKeys: Sendable {
    let directory: String
    let signer: TokenSigner
    let publicKeys: Ed25519PublicKeys
    var serviceTokenFile: String { directory + "/service.token" }
    var publicKeyFile: String { directory + "/signing.pub" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run(["/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", directory + "/signing.key"])
        try Self.run(["/usr/bin/openssl", "pkey", "-in", directory + "/signing.key", "-pubout", "-out", directory + "/signing.pub"])
        signer = TokenSigner(key: try Ed25519PrivateKey(pemFile: directory + "/signing.key"))
        publicKeys = try Ed25519PublicKeys(pemFile: directory + "/signing.pub")
        let service = signer.token(subject: "restaurant-service", role: "service", lifetime: 3600, now: Date().timeIntervalSince1970)
        try service.write(toFile: serviceTokenFile, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// A token for `role`/`subject`, valid for `lifetime` seconds.
    func token(_ role: String, _ subject: String, lifetime: Double = 600) -> String {
        signer.token(subject: subject, role: role, lifetime: lifetime, now: Date().timeIntervalSince1970)
    }

    static func run(_ arguments: [String]) throws {
        let (pid, _) = try ChildProcess.spawn(arguments)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { throw ChildProcess.SpawnError(description: "\(arguments.joined(separator: " ")) failed") }
    }
}
