// order-service: OrderService on port 50051 (see OrderLogic for what it does).
import ArgumentParser
import OrderLogic
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
        try await serve([logic.service], configuration: try options.serverConfiguration(defaultPort: 50051), logger: logger) {
            await logic.stop()
            redis.close()
        }
    }
}
