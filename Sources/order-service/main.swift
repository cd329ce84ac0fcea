// order-service: OrderService on port 50051 (see OrderLogic for what it does).
import ArgumentParser
import OrderLogic
import PlatformProtos
import RedisClient
import ServiceRuntime

@main
struct OrderServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "order-service", abstract: "Serves order_service.OrderService.")

    @OptionGroup var options: ServiceOptions

    func run() async throws {
        let logger = try options.bootstrapLogging(label: "order-service")
        let redis = RedisClient(configuration: try options.redisConfiguration())
        let logic = OrderServiceLogic(redis: redis, logger: logger)
        await logic.start()
        let configuration = try options.serverConfiguration(defaultPort: 50051)
        let interceptors = try options.authentication.interceptors(parties: logic, logger: logger)
        try await serve([logic.service], descriptors: PlatformProtosDescriptors.all, configuration: configuration,
                        interceptors: interceptors, logger: logger, beforeShutdown: { logic.endWatches() }) {
            await logic.stop()
            redis.close()
        }
    }
}
