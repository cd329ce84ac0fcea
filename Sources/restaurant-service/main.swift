// restaurant-service: RestaurantService on port 50052 (see RestaurantLogic for what it does).
import ArgumentParser
import GRPCHTTP2
import PlatformAuth
import PlatformProtos
import RedisClient
import RestaurantLogic
import ServiceRuntime

@main
struct RestaurantServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restaurant-service", abstract: "Serves restaurant_service.RestaurantService.")

    @OptionGroup var options: ServiceOptions
    @Option(help: "The order service, host:port (env ORDER_SERVICE_ADDR, default localhost:50051).")
    var orderServiceAddr: String?
    @Option(help: "File holding the token presented to the order service, re-read when it changes (env SERVICE_TOKEN_FILE).")
    var serviceTokenFile: String?

    func run() async throws {
        let telemetry = try options.bootstrapTelemetry(label: "restaurant-service", metricsPort: 9452)
        let logger = telemetry.logger
        // ORDER_SERVICE_ADDR, ORDER_SERVICE_TLS_CA.
        let orderChannel = try TLSOptions.peerChannel(orderServiceAddr, prefix: "ORDER_SERVICE", defaultAddress: "localhost:50051")
        let orders = telemetry.instrument(orderChannel, methods: [OrderServiceMethods.recordRestaurantDecision.path,
                                                                  OrderServiceMethods.recordOrderReady.path])
        let redis = RedisClient(configuration: try options.redisConfiguration(), observer: telemetry.redisObserver)
        let serviceToken = ServiceOptions.setting(serviceTokenFile, env: "SERVICE_TOKEN_FILE").map(ServiceTokenFile.init)
        let logic = RestaurantServiceLogic(redis: redis, orders: OrderServiceClient(transport: orders),
                                           serviceToken: serviceToken, logger: logger)
        let configuration = try options.serverConfiguration(defaultPort: 50052)
        let interceptors = try options.authentication.interceptors(parties: nil, logger: logger)
        try await serve([logic.service], descriptors: PlatformProtosDescriptors.all, configuration: configuration,
                        health: try options.healthConfiguration(),
                        interceptors: interceptors, telemetry: telemetry, beforeShutdown: { logic.endWatches() }) {
            orderChannel.close()
            redis.close()
        }
    }
}
