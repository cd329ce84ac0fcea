// grpc.health.v1.Health/Check, served by every server: SERVING for "" and each registered
// service, NOT_SERVING once shutdown has begun, NOT_FOUND for a name the server does not serve.
import PlatformProtos

struct HealthService: HealthProvider {
    let serviceNames: Set<String>
    let isShuttingDown: @Sendable () -> Bool

    init(serviceNames: [String], isShuttingDown: @escaping @Sendable () -> Bool) {
        self.serviceNames = Set(serviceNames + [HealthMethods.serviceName])
        self.isShuttingDown = isShuttingDown
    }

    func check(_ request: HealthCheckRequest, context: ServerContext) async throws -> HealthCheckResponse {
        guard request.service.isEmpty || serviceNames.contains(request.service) else {
            throw RPCError(.notFound, "unknown service \(request.service)")
        }
        return HealthCheckResponse(status: isShuttingDown() ? .notServing : .serving)
    }
}
