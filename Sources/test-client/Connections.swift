// Where the three services are and how every subcommand reaches them.
//
// Each address comes from its flag, else its environment variable, else the standard local port,
// the same precedence the services use for their own settings. A `Connection` pairs a service's
// typed client with its name and address, so every failure can say which service at which address
// failed and with which status: `RestaurantService at localhost:50052: UNAVAILABLE: ...`. The
// client depends only on the gRPC layer and the generated clients (no Redis, no service runtime),
// which keeps it small enough to ship in the service image as its health check.
import ArgumentParser
import FoundationEssentials
import GRPCHTTP2
import GRPCProtos
import PlatformProtos

/// A failed call, naming the service and address it went to.
struct ServiceError: Error, CustomStringConvertible {
    let service: String
    let address: TargetAddress
    let error: RPCError

    var description: String { "\(service) at \(address): \(error)" }
}

/// One service as the client reaches it: a typed client over its own channel.
struct Connection<Client: Sendable>: Sendable {
    let service: String
    let address: TargetAddress
    let client: Client
    let channel: GRPCChannel
    let timeout: Duration
    let credentials: Credentials

    init(service: String, address: TargetAddress, timeout: Duration, credentials: Credentials, tls: ClientTLSConfiguration?,
         makeClient: (GRPCChannel) -> Client) {
        self.service = service
        self.address = address
        self.timeout = timeout
        self.credentials = credentials
        var configuration = ClientConfiguration()
        configuration.tls = tls
        channel = GRPCChannel(host: address.host, port: address.port, configuration: configuration)
        client = makeClient(channel)
    }

    /// Makes one call with the common deadline; a failure names this service and its address.
    /// (`rpc` is untyped-throwing only because Swift infers that for `{ try await $0.rpc(...) }`;
    /// the generated clients throw nothing but RPCError.)
    func call<Response>(as identity: Identity = .operator, _ rpc: (Client, CallOptions) async throws -> Response) async throws(ServiceError) -> Response {
        do {
            return try await rpc(client, CallOptions(timeout: timeout, metadata: credentials.metadata(for: identity)))
        } catch {
            throw ServiceError(service: service, address: address, error: RPCError(from: error))
        }
    }

    /// A streaming call, without the common deadline unless `timeout` is given (a watch runs
    /// until its stream ends or the user stops it); a failure names this service and its address.
    func stream<Result>(as identity: Identity = .operator, timeout: Duration? = nil,
                        _ rpc: (Client, CallOptions) async throws -> Result) async throws(ServiceError) -> Result {
        do {
            return try await rpc(client, CallOptions(timeout: timeout, metadata: credentials.metadata(for: identity)))
        } catch {
            throw ServiceError(service: service, address: address, error: RPCError(from: error))
        }
    }

    /// grpc.health.v1 Check of the whole server (service name "").
    func checkHealth() async throws(ServiceError) -> HealthCheckResponse.ServingStatus {
        let health = HealthClient(transport: channel)
        return try await call { _, options in try await health.check(HealthCheckRequest(service: ""), options: options).status }
    }
}

/// The flags every subcommand shares: the three addresses and the per-call timeout.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("order-addr"), help: "OrderService host:port (env ORDER_SERVICE_ADDR, default localhost:50051).")
    var orderAddress: String?
    @Option(name: .customLong("restaurant-addr"), help: "RestaurantService host:port (env RESTAURANT_SERVICE_ADDR, default localhost:50052).")
    var restaurantAddress: String?
    @Option(name: .customLong("delivery-addr"), help: "DeliveryService host:port (env DELIVERY_SERVICE_ADDR, default localhost:50053).")
    var deliveryAddress: String?
    @Option(help: "Seconds each call may take.")
    var timeout: Double = 10
    @Option(help: "A bearer token for every call (env PLATFORM_TOKEN; default: minted from run-platform's development key).")
    var token: String?
    @Option(name: .customLong("tls-ca"), help: "Connect with TLS, trusting this CA (PEM; env PLATFORM_TLS_CA; default: run-platform's development CA when it exists).")
    var tlsCA: String?
    @Flag(help: "Connect without TLS (h2c), even when a development CA exists.") var plaintext = false

    func validate() throws {
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be a positive number of seconds") }
        _ = try addresses()
    }

    /// The flag, else the environment variable, else the default.
    private static func address(_ flag: String?, env name: String, default fallback: String) throws(ValidationError) -> TargetAddress {
        let environment = ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
        do {
            return try TargetAddress(parsing: flag ?? environment ?? fallback)
        } catch {
            throw ValidationError("\(name): \(error)")
        }
    }

    func addresses() throws(ValidationError) -> (order: TargetAddress, restaurant: TargetAddress, delivery: TargetAddress) {
        (try Self.address(orderAddress, env: "ORDER_SERVICE_ADDR", default: "localhost:50051"),
         try Self.address(restaurantAddress, env: "RESTAURANT_SERVICE_ADDR", default: "localhost:50052"),
         try Self.address(deliveryAddress, env: "DELIVERY_SERVICE_ADDR", default: "localhost:50053"))
    }

    /// Opens (lazily: nothing connects before the first call) a connection to each service.
    func connect() throws(ValidationError) -> Services {
        let addresses = try addresses()
        let timeout = Duration.milliseconds(Int64(timeout * 1000))
        let credentials = try Credentials.resolve(token: token)
        let tls = try tlsConfiguration()
        return Services(
            order: Connection(service: "OrderService", address: addresses.order, timeout: timeout, credentials: credentials, tls: tls,
                              makeClient: { OrderServiceClient(transport: $0) }),
            restaurant: Connection(service: "RestaurantService", address: addresses.restaurant, timeout: timeout,
                                   credentials: credentials, tls: tls, makeClient: { RestaurantServiceClient(transport: $0) }),
            delivery: Connection(service: "DeliveryService", address: addresses.delivery, timeout: timeout, credentials: credentials,
                                 tls: tls, makeClient: { DeliveryServiceClient(transport: $0) }))
    }

    /// TLS trusting `--tls-ca`/`PLATFORM_TLS_CA`, else the development CA when there is one; nil
    /// (h2c) with `--plaintext` or neither.
    func tlsConfiguration() throws(ValidationError) -> ClientTLSConfiguration? {
        guard !plaintext else { return nil }
        let environment = ProcessInfo.processInfo.environment["PLATFORM_TLS_CA"].flatMap { $0.isEmpty ? nil : $0 }
        let development = Credentials.developmentCA
        guard let ca = tlsCA ?? environment ?? (FileManager.default.fileExists(atPath: development) ? development : nil) else {
            return nil
        }
        do {
            return try ClientTLSConfiguration(trustRootsFile: ca)
        } catch {
            throw ValidationError("--tls-ca \(ca): \(error)")
        }
    }
}

/// The three services; `close` when done so the client exits promptly.
struct Services: Sendable {
    let order: Connection<OrderServiceClient>
    let restaurant: Connection<RestaurantServiceClient>
    let delivery: Connection<DeliveryServiceClient>

    func close() {
        order.channel.close()
        restaurant.channel.close()
        delivery.channel.close()
    }
}
