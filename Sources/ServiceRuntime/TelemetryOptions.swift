// How a service is watched: its log format and level, its metrics port, and where its spans go.
//
// - `LOG_FORMAT` text (default) or json, `LOG_LEVEL` (info by default: one line per call).
// - `METRICS_PORT` (each service has its own default, so the three fit on one host; 0 turns
//   metrics off): `GET /metrics` over plain HTTP on the service's HOST. With metrics off nothing
//   is counted at all: no recorder is made, no business counter counts.
// - `OTEL_EXPORTER_OTLP_ENDPOINT` (an http:// base URL; `/v1/traces` is appended, as the
//   OpenTelemetry specification has it), with `OTEL_SERVICE_NAME` overriding the service's name:
//   spans are exported over OTLP/HTTP as JSON. Without it spans are not recorded, but trace
//   context still travels and trace ids still reach the logs.
import ArgumentParser
import GRPCHTTP2
import Instrumentation
import Logging
import RedisClient
import RPCCore
import Telemetry

/// The telemetry flags every service takes.
public struct TelemetryOptions: ParsableArguments, Sendable {
    @Option(help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL, default info).")
    public var logLevel: String?
    @Option(help: "text or json (env LOG_FORMAT, default text).") public var logFormat: String?
    @Option(help: "Port of the plain-HTTP /metrics endpoint; 0 turns metrics off (env METRICS_PORT; the default is the service's own).")
    public var metricsPort: Int?

    public init() {}
}

/// What a service's telemetry is made of, once set up.
public struct ServiceTelemetry: Sendable {
    public let logger: Logger
    /// Nil when metrics are off.
    public let metrics: ServiceMetrics?
    /// The Redis client's observer (nil when metrics are off).
    public let redisObserver: (any RedisObserver)?
    public let tracer: PlatformTracer
    let exporter: OTLPExporter?
    let metricsAddress: (host: String, port: Int)?

    /// `channel` carrying the trace, and counted as `grpc_client_*` for `methods`.
    public func instrument(_ channel: GRPCChannel, methods: [String]) -> any ClientTransport {
        InstrumentedClientTransport(channel, methods: methods, metrics: metrics, tracer: tracer)
    }

    /// Runs `collect` before each scrape (gauges a service reads from Redis); nothing when
    /// metrics are off.
    public func addCollector(_ collect: @escaping @Sendable () async -> Void) {
        metrics?.addCollector(collect)
    }
}

extension ServiceOptions {
    /// Sets up logging (format, level, trace ids), metrics and tracing for the service `label`,
    /// whose metrics port is `metricsPort` unless METRICS_PORT says otherwise.
    public func bootstrapTelemetry(label: String, metricsPort defaultPort: Int) throws -> ServiceTelemetry {
        let levelText = Self.setting(telemetry.logLevel, env: "LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw ValidationError("LOG_LEVEL must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let formatText = Self.setting(telemetry.logFormat, env: "LOG_FORMAT") ?? "text"
        guard let format = LogFormat(rawValue: formatText.lowercased()) else {
            throw ValidationError("LOG_FORMAT must be text or json, got \(formatText)")
        }
        format.bootstrap(level: level)
        let logger = Logger(label: label)

        let portText = Self.setting(telemetry.metricsPort.map(String.init), env: "METRICS_PORT")
        guard let port = portText.map(Int.init) ?? defaultPort, (0...65535).contains(port) else {
            throw ValidationError("METRICS_PORT must be a port number or 0, got \(portText ?? "")")
        }
        var metrics: ServiceMetrics?
        if port != 0 {
            let registry = ServiceMetrics()
            registry.bootstrapMetricsSystem()
            addProcessMetrics(to: registry)
            metrics = registry
        }

        var exporter: OTLPExporter?
        if let endpoint = Self.setting(nil, env: "OTEL_EXPORTER_OTLP_ENDPOINT") {
            do {
                exporter = try OTLPExporter(endpoint: endpoint, serviceName: Self.setting(nil, env: "OTEL_SERVICE_NAME") ?? label,
                                            logger: logger)
            } catch {
                throw ValidationError("OTEL_EXPORTER_OTLP_ENDPOINT: \(error)")
            }
        }
        let tracer = PlatformTracer(exporter: exporter)
        InstrumentationSystem.bootstrap(tracer)
        return ServiceTelemetry(logger: logger, metrics: metrics, redisObserver: metrics.map(RedisMetrics.init), tracer: tracer, exporter: exporter,
                                metricsAddress: port == 0 ? nil : (Self.setting(host, env: "HOST") ?? "0.0.0.0", port))
    }
}
