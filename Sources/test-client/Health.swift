// `test-client health`: grpc.health.v1 Check (service "") of each service, one line each, exit 1
// unless every checked service is SERVING. `--only` checks one service, which is what a container
// health check wants. The checks run concurrently so a service that is down costs one timeout,
// not three.
import ArgumentParser
import GRPCProtos
import PlatformProtos

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Checks that the services are SERVING.")

    enum Service: String, ExpressibleByArgument, CaseIterable {
        case order, restaurant, delivery
    }

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Check only this service: order, restaurant or delivery.") var only: Service?

    func run() async throws {
        let services = try connection.connect()
        defer { services.close() }
        let checked = only.map { [$0] } ?? Service.allCases
        let results = await withTaskGroup(of: (index: Int, line: String, serving: Bool).self) { group in
            for (index, service) in checked.enumerated() {
                group.addTask {
                    let result = await Self.check(service, in: services)
                    return (index, result.line, result.serving)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }.sorted { $0.index < $1.index }
        }
        for result in results { print(result.line) }
        if results.contains(where: { !$0.serving }) { throw ExitCode.failure }
    }

    /// One line saying how the service answered, and whether it is SERVING.
    static func check(_ service: Service, in services: Services) async -> (line: String, serving: Bool) {
        switch service {
        case .order: await check(services.order)
        case .restaurant: await check(services.restaurant)
        case .delivery: await check(services.delivery)
        }
    }

    private static func check<Client>(_ connection: Connection<Client>) async -> (line: String, serving: Bool) {
        do {
            let status = try await connection.checkHealth()
            let line = "\(connection.service) at \(connection.address): \(statusName(status))"
            return status == .serving ? ("✓ " + line, true) : ("✗ " + line, false)
        } catch {
            return ("✗ \(error)", false)
        }
    }

    private static func statusName(_ status: HealthCheckResponse.ServingStatus) -> String {
        switch status {
        case .serving: "SERVING"
        case .notServing: "NOT_SERVING"
        case .serviceUnknown: "SERVICE_UNKNOWN"
        default: "UNKNOWN (\(status.rawValue))"
        }
    }
}
