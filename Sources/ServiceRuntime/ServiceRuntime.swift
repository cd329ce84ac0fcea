// What the three service executables share: their common flags and environment variables, the
// telemetry set-up (TelemetryOptions), the Redis client, and serving until SIGTERM/SIGINT with a
// graceful shutdown. Each executable is then a thin main that builds its service's logic and
// hands it over.
//
// Configuration precedence: a flag wins over its environment variable, which wins over the default.
import ArgumentParser
import GRPCHTTP2
import GRPCServices
import Logging
import PlatformAuth
import RedisClient
import RPCCore
import Telemetry
#if canImport(Glibc)
import Glibc
#endif

/// Flags every service takes, each with the environment variable a container sets.
public struct ServiceOptions: ParsableArguments, Sendable {
    @Option(help: "Address to listen on (env HOST, default 0.0.0.0).") public var host: String?
    @Option(help: "Port to listen on (env PORT).") public var port: Int?
    @Option(help: "A second port serving only grpc.health.v1, over h2c and without tokens, for probes that speak neither TLS nor tokens (Kubernetes' gRPC probes; env HEALTH_PORT; default: none).")
    public var healthPort: Int?
    @Option(help: "Redis host (env REDIS_HOST, default localhost).") public var redisHost: String?
    @Option(help: "Redis port (env REDIS_PORT, default 6379).") public var redisPort: Int?
    @Option(help: "Redis password (env REDIS_PASSWORD).") public var redisPassword: String?
    @OptionGroup public var telemetry: TelemetryOptions
    @OptionGroup public var authentication: AuthOptions
    @OptionGroup public var tls: TLSOptions

    public init() {}

    /// Replies the read cache of a single Redis node keeps unless REDIS_CACHE_ENTRIES says
    /// otherwise: one order's view is a few hundred bytes, so about 5 MB.
    public static let defaultReadCacheCapacity = 10_000

    /// A flag, else the environment variable, else nil.
    public static func setting(_ flag: String?, env name: String) -> String? {
        if let flag { return flag }
        guard let value = getenv(name) else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }

    public func serverConfiguration(defaultPort: Int) throws -> ServerConfiguration {
        let host = Self.setting(host, env: "HOST") ?? "0.0.0.0"
        let portText = Self.setting(port.map(String.init), env: "PORT")
        guard let port = portText.map(Int.init) ?? defaultPort, (0...65535).contains(port) else {
            throw ValidationError("PORT must be a port number, got \(portText ?? "")")
        }
        var configuration = ServerConfiguration(host: host, port: port)
        configuration.tls = try tls.serverTLSConfiguration()
        return configuration
    }

    /// The health-only port's configuration (h2c, the service's host), or nil when HEALTH_PORT
    /// is not set.
    public func healthConfiguration() throws -> ServerConfiguration? {
        guard let text = Self.setting(healthPort.map(String.init), env: "HEALTH_PORT") else { return nil }
        guard let port = Int(text), (1...65535).contains(port) else {
            throw ValidationError("HEALTH_PORT must be a port number, got \(text)")
        }
        return ServerConfiguration(host: Self.setting(host, env: "HOST") ?? "0.0.0.0", port: port)
    }

    /// Single node by default (REDIS_HOST, REDIS_PORT); REDIS_CLUSTER_NODES (a few nodes of a
    /// Redis Cluster; the rest are discovered) or REDIS_SENTINELS with REDIS_SENTINEL_MASTER
    /// (a Sentinel-watched master); REDIS_WAIT_REPLICAS (with REDIS_WAIT_TIMEOUT_MS) makes
    /// every change wait for that many replicas; REDIS_CACHE_ENTRIES (10,000; 0 turns it off)
    /// sizes the read cache of a single node. README "Redis deployments" says what each
    /// guarantees.
    public func redisConfiguration() throws -> RedisConfiguration {
        let portText = Self.setting(redisPort.map(String.init), env: "REDIS_PORT")
        guard let port = portText.map(Int.init) ?? 6379, (1...65535).contains(port) else {
            throw ValidationError("REDIS_PORT must be a port number, got \(portText ?? "")")
        }
        var configuration = RedisConfiguration(host: Self.setting(redisHost, env: "REDIS_HOST") ?? "localhost", port: port,
                                               password: Self.setting(redisPassword, env: "REDIS_PASSWORD"),
                                               readCacheCapacity: Self.defaultReadCacheCapacity)
        let clusterNodes = Self.setting(nil, env: "REDIS_CLUSTER_NODES")
        if let clusterNodes {
            guard Self.setting(nil, env: "REDIS_SENTINELS") == nil else {
                throw ValidationError("set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both")
            }
            do {
                configuration.deployment = .cluster(seeds: try RedisEndpoint.list(parsing: clusterNodes))
            } catch {
                throw ValidationError("REDIS_CLUSTER_NODES: \(error)")
            }
        }
        if let sentinels = Self.setting(nil, env: "REDIS_SENTINELS") {
            guard let master = Self.setting(nil, env: "REDIS_SENTINEL_MASTER") else {
                throw ValidationError("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER, the name the sentinels monitor")
            }
            do {
                configuration.deployment = .sentinel(sentinels: try RedisEndpoint.list(parsing: sentinels), masterName: master)
            } catch {
                throw ValidationError("REDIS_SENTINELS: \(error)")
            }
        }
        if let text = Self.setting(nil, env: "REDIS_WAIT_REPLICAS") {
            guard let replicas = Int(text), replicas >= 0 else {
                throw ValidationError("REDIS_WAIT_REPLICAS must be a number of replicas, got \(text)")
            }
            configuration.waitReplicas = replicas
        }
        if let text = Self.setting(nil, env: "REDIS_CACHE_ENTRIES") {
            guard let entries = Int(text), entries >= 0 else {
                throw ValidationError("REDIS_CACHE_ENTRIES must be a number of entries (0 turns the cache off), got \(text)")
            }
            configuration.readCacheCapacity = entries
        }
        if let text = Self.setting(nil, env: "REDIS_WAIT_TIMEOUT_MS") {
            // Below the command timeout, or a slow WAIT would time out the shared connection.
            let limit = Int(configuration.commandTimeout / .milliseconds(1)) / 2
            guard let milliseconds = Int(text), (1...limit).contains(milliseconds) else {
                throw ValidationError("REDIS_WAIT_TIMEOUT_MS must be 1 to \(limit) milliseconds, got \(text)")
            }
            configuration.waitTimeout = .milliseconds(milliseconds)
        }
        return configuration
    }
}

/// Serves `services`, with grpc.health.v1 and server reflection (from `descriptors`, the .proto
/// files behind them), until SIGTERM or SIGINT, every call logged (and, once its request
/// decoded, traced) and with metrics on counted, and /metrics on its port. Then health turns
/// NOT_SERVING (every Watch is told), `beforeShutdown` runs (end long watches), the server
/// drains gracefully, and `stop` runs.
public func serve(_ services: [ServiceDefinition], descriptors: [ProtoFileDescriptor],
                  configuration: ServerConfiguration, health healthConfiguration: ServerConfiguration? = nil,
                  interceptors: [any ServerInterceptor] = [], telemetry: ServiceTelemetry,
                  beforeShutdown: @Sendable () async -> Void = {},
                  stop: @Sendable () async -> Void = {}) async throws {
    let logger = telemetry.logger
    let health = HealthService(services: services.map(\.name))
    let reflection = ReflectionService(files: descriptors, served: services.map(\.name))
    let callTelemetry = CallTelemetry(tracer: telemetry.tracer, logger: logger) { $0[CallerKey.self]?.description }
    let server = GRPCServer(configuration: configuration, services: services + [health.service] + reflection.services,
                            interceptors: [callTelemetry] + interceptors, observer: telemetry.metrics.map(GRPCServerMetrics.init),
                            logger: logger)
    // The same health statuses on a port of their own: it tells NOT_SERVING at shutdown too.
    let healthServer = healthConfiguration.map { GRPCServer(configuration: $0, services: [health.service], logger: logger) }
    // The metrics port first: a service that cannot be watched stops before it serves.
    var metricsEndpoint: MetricsEndpoint?
    if let metrics = telemetry.metrics, let address = telemetry.metricsAddress {
        metrics.addGauge("grpc_server_connections", help: "Connections open to the service port.") { Double(server.connectionCount) }
        do {
            metricsEndpoint = try MetricsEndpoint(host: address.host, port: address.port, metrics: metrics)
            logger.info("metrics", metadata: ["address": "\(address.host):\(metricsEndpoint?.port ?? address.port)", "path": "/metrics"])
        } catch {
            logger.critical("cannot listen", metadata: ["address": "\(address.host):\(address.port)", "error": "\(error)"])
            throw ExitCode.failure
        }
    }
    for (listener, address) in [(server, configuration), (healthServer, healthConfiguration)] {
        guard let listener, let address else { continue }
        do {
            try listener.start()
        } catch {
            logger.critical("cannot listen", metadata: ["address": "\(address.host):\(address.port)", "error": "\(error)"])
            throw ExitCode.failure
        }
    }
    await server.runUntilTerminated {
        health.enterShutdown()
        await beforeShutdown()
    }
    await healthServer?.shutdown(gracePeriod: .zero)
    // Once the server has stopped, so that scrapes during the drain see its last calls. (One in
    // the moment between the server's loops stopping and this waits out its collector limit.)
    metricsEndpoint?.close()
    await stop()
    await telemetry.exporter?.shutdown()
}
