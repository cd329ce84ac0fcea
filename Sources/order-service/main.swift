// order-service: OrderService on port 50051 (see OrderLogic for what it does). It calls the
// restaurant service's GetMenu to price orders given by menu lines.
import ArgumentParser
import GRPCHTTP2
import OrderLogic
import PlatformAuth
import PlatformProtos
import RedisClient
import ServiceRuntime

@main
struct OrderServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "order-service", abstract: "Serves order_service.OrderService.")

    @OptionGroup var options: ServiceOptions
    @Option(help: "The restaurant service, host:port, whose menus price orders (env RESTAURANT_SERVICE_ADDR, default localhost:50052).")
    var restaurantServiceAddr: String?
    @Option(help: "File holding the token presented to the restaurant service, re-read when it changes (env SERVICE_TOKEN_FILE).")
    var serviceTokenFile: String?

    func run() async throws {
        let telemetry = try options.bootstrapTelemetry(label: "order-service", metricsPort: 9451)
        let logger = telemetry.logger
        // RESTAURANT_SERVICE_ADDR, RESTAURANT_SERVICE_TLS_CA.
        let restaurantChannel = try TLSOptions.peerChannel(restaurantServiceAddr, prefix: "RESTAURANT_SERVICE", defaultAddress: "localhost:50052")
        let restaurants = telemetry.instrument(restaurantChannel, methods: [RestaurantServiceMethods.getMenu.path])
        let menus = RestaurantMenuCatalog(restaurants: RestaurantServiceClient(transport: restaurants),
                                          token: ServiceOptions.setting(serviceTokenFile, env: "SERVICE_TOKEN_FILE").map(ServiceTokenFile.init),
                                          logger: logger)
        let redis = RedisClient(configuration: try options.redisConfiguration(), observer: telemetry.redisObserver)
        let logic = OrderServiceLogic(redis: redis, menus: menus, logger: logger)
        await logic.start()
        telemetry.addCollector { await logic.recordMetrics() }
        let configuration = try options.serverConfiguration(defaultPort: 50051)
        let interceptors = try options.authentication.interceptors(parties: logic, logger: logger)
        try await serve([logic.service], descriptors: PlatformProtosDescriptors.all, configuration: configuration,
                        health: try options.healthConfiguration(),
                        interceptors: interceptors, telemetry: telemetry, beforeShutdown: { logic.endWatches() }) {
            await logic.stop()
            restaurantChannel.close()
            redis.close()
        }
    }
}
