// delivery-service: DeliveryService on port 50053 (see DeliveryLogic for what it does).
import ArgumentParser
import DeliveryLogic
import PlatformCommon
import PlatformProtos
import RedisClient
import ServiceRuntime

@main
struct DeliveryServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delivery-service", abstract: "Serves delivery_service.DeliveryService.")

    @OptionGroup var options: ServiceOptions
    @Option(help: "Drivers for automatic assignment, comma-separated (env DRIVERS, default driver_auto).")
    var drivers: String?

    func run() async throws {
        let telemetry = try options.bootstrapTelemetry(label: "delivery-service", metricsPort: 9453)
        let logger = telemetry.logger
        let pool = (ServiceOptions.setting(drivers, env: "DRIVERS") ?? "")
            .split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
        if let bad = pool.first(where: { !Identifier.isValid($0) }) {
            throw ValidationError("DRIVERS: \(bad) is not a valid driver id")
        }
        let redis = RedisClient(configuration: try options.redisConfiguration(), observer: telemetry.redisObserver)
        let logic = DeliveryServiceLogic(redis: redis, drivers: pool, logger: logger)
        await logic.start()
        telemetry.addCollector { await logic.recordMetrics() }
        let configuration = try options.serverConfiguration(defaultPort: 50053)
        let interceptors = try options.authentication.interceptors(parties: logic, logger: logger)
        try await serve([logic.service], descriptors: PlatformProtosDescriptors.all, configuration: configuration,
                        health: try options.healthConfiguration(),
                        interceptors: interceptors, telemetry: telemetry, beforeShutdown: { logic.endWatches() }) {
            await logic.stop()
            redis.close()
        }
    }
}
