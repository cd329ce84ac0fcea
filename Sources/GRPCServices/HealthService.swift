// grpc.health.v1.Health, for any server: `Check` answers the current status of the server ("")
// or of one of its services, `Watch` streams it (the current status at once, then every change),
// as grpc-go's and grpc-java's health servers do. A service the server does not serve is
// NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, which keeps watching in case it appears.
//
// `enterShutdown` turns every status NOT_SERVING and ends every Watch right after that message
// has been sent, so load balancers and probes see the server leave before its streams close.
// The statuses and the watchers live behind one lock; a watcher is an AsyncStream whose buffer
// keeps only the newest status, so a slow watcher costs one message, never a backlog.
import GRPCProtos
import RPCCore
import Synchronization

/// The standard health service, reporting the services it was given.
public final class HealthService: HealthProvider {
    private typealias Status = HealthCheckResponse.ServingStatus

    private struct State {
        var statuses: [String: Status]
        var watchers: [Int: (service: String, continuation: AsyncStream<Status>.Continuation)] = [:]
        var nextWatcher = 0
        var shuttingDown = false
    }

    private let state: Mutex<State>

    /// `services` (fully qualified names) and the server as a whole ("") start SERVING.
    public init(services: [String]) {
        var statuses: [String: Status] = ["": .serving, HealthMethods.serviceName: .serving]
        for service in services { statuses[service] = .serving }
        state = Mutex(State(statuses: statuses))
    }

    /// Sets a service's status ("" for the whole server) and tells its watchers.
    public func setStatus(_ status: HealthCheckResponse.ServingStatus, for service: String) {
        state.withLock { state in
            guard !state.shuttingDown, state.statuses[service] != status else { return }
            state.statuses[service] = status
            for watcher in state.watchers.values where watcher.service == service {
                watcher.continuation.yield(status)
            }
        }
    }

    /// Everything becomes NOT_SERVING for good; every Watch sends that and ends.
    public func enterShutdown() {
        state.withLock { state in
            guard !state.shuttingDown else { return }
            state.shuttingDown = true
            for service in state.statuses.keys { state.statuses[service] = .notServing }
            for watcher in state.watchers.values {
                if state.statuses[watcher.service] != nil { watcher.continuation.yield(.notServing) }
                watcher.continuation.finish()
            }
            state.watchers.removeAll()
        }
    }

    public func check(_ request: HealthCheckRequest, context: ServerContext) async throws -> HealthCheckResponse {
        guard let status = state.withLock({ $0.statuses[request.service] }) else {
            throw RPCError(.notFound, "unknown service \(request.service)")
        }
        return HealthCheckResponse(status: status)
    }

    public func watch(_ request: HealthCheckRequest, responses: RPCWriter<HealthCheckResponse>, context: ServerContext) async throws {
        let (statuses, continuation) = AsyncStream<Status>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let watcher = state.withLock { state -> Int? in
            continuation.yield(state.statuses[request.service] ?? .serviceUnknown)
            guard !state.shuttingDown else {
                continuation.finish()
                return nil
            }
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = (request.service, continuation)
            return state.nextWatcher
        }
        defer {
            if let watcher { _ = state.withLock { $0.watchers.removeValue(forKey: watcher) } }
        }
        for await status in statuses {
            try await responses.write(HealthCheckResponse(status: status))
        }
    }
}
