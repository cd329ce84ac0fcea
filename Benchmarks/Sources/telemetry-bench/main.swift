// telemetry-bench: what metrics, tracing and the call log cost per call, in CPU time, measured on
// the pieces every GetOrderStatus passes through, without the noise of sockets and Redis:
// - metrics: the server recorder's four calls (started, received, sent, finished with the clock
//   read that times the call) and the Redis recorder's one command (the clock read of its reply;
//   the one when it is sent is the command's deadline's, read without metrics too), against the
//   same loop with that one read alone; then the scrape that folds those counts into the
//   registry, per call it folds;
// - tracing and the call log: CallTelemetry's scope (read `traceparent`, start the span, bind
//   the task-local context) and its log line, with and without an incoming `traceparent`, with
//   no exporter and the log at `warning` (as the benchmarks run), then at `info` into a handler
//   that drops the line; and a route's whole handler with CallTelemetry as its interceptor
//   against the same route without interceptors (what the services paid before telemetry,
//   with AUTH=off).
// The recorders run on their loop thread, as in the server.
//
// usage: telemetry-bench [--count 1000000]
import ArgumentParser
import EventLoop
import GRPCHTTP2
import Logging
import RedisClient
import RPCCore
import Telemetry
#if canImport(Glibc)
import Glibc
#endif

@main
struct TelemetryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "telemetry-bench", abstract: "CPU per call of metrics, tracing and the call log.")

    @Option(help: "Calls per measurement.") var count = 1_000_000

    func run() async throws {
        let metrics = ServiceMetrics()
        let route = Route(MethodDescriptor<PingMessage, PingMessage>(service: "bench.Bench", method: "Ping")) { request, _ in request }
        let loop = EventLoop(name: "bench")
        let server = GRPCServerMetrics(metrics)
        let redis = RedisMetrics(metrics)
        let count = self.count
        // The recorders are made and called on the loop, as the transport does.
        let perCall = await onLoop(loop) { () -> (recorded: UInt64, empty: UInt64) in
            let calls = server.makeRecorder(methods: [route], loop: loop)
            let commands = redis.makeRecorder(loop: loop)
            let name = Array("FCALL".utf8)
            let startedAt = ContinuousClock.now
            let start = cpuNanoseconds()
            for _ in 0..<count {
                calls.started(method: 0)
                calls.received(method: 0)
                let taken = ContinuousClock.now
                commands.completed(name, .reply, duration: .now - taken)
                calls.sent(method: 0)
                calls.finished(method: 0, code: .ok, duration: .now - startedAt)
            }
            let recorded = cpuNanoseconds() - start
            // The same loop with nothing recorded: the deadline's clock read alone.
            let emptyStart = cpuNanoseconds()
            var latest = startedAt
            for _ in 0..<count { latest = max(latest, ContinuousClock.now) }
            if latest < startedAt { print("") }
            return (recorded, cpuNanoseconds() - emptyStart)
        }
        report("metrics on the request path (server recorder and one Redis command)", perCall.recorded - perCall.empty, count)
        let foldStart = cpuNanoseconds()
        let exposition = await metrics.exposition()
        report("the scrape that folds them in (\(exposition.count) bytes)", cpuNanoseconds() - foldStart, count)

        let quiet = Logger(label: "bench") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let dropping = Logger(label: "bench") { _ in DroppingLogHandler() }
        let tracer = PlatformTracer(exporter: nil)
        var withParent = Metadata()
        withParent.add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        for (name, logger, metadata) in [("no traceparent, log at warning", quiet, Metadata()),
                                         ("a traceparent, log at warning", quiet, withParent),
                                         ("a traceparent, the call's line at info", dropping, withParent)] {
            let telemetry = CallTelemetry(tracer: tracer, logger: logger)
            let context = ServerContext(path: route.path, requestMetadata: metadata, deadline: nil)
            let start = cpuNanoseconds()
            for _ in 0..<count {
                _ = try await telemetry.scope(context) { () async throws -> Int in
                    telemetry.finished(RPCError(.ok), request: nil, response: nil, context: context)
                    return 1
                }
            }
            report("tracing and the call log, \(name)", cpuNanoseconds() - start, count)
        }
        let intercepted = route.intercepted(by: [CallTelemetry(tracer: tracer, logger: quiet)])
        for (name, handler) in [("without interceptors", route.handler), ("with CallTelemetry, log at warning", intercepted.handler)] {
            guard case .unary(let handle) = handler else { continue }
            let context = ServerContext(path: route.path, requestMetadata: Metadata(), deadline: nil)
            let start = cpuNanoseconds()
            for _ in 0..<count { _ = try await handle([], context) }
            report("a unary route's handler \(name)", cpuNanoseconds() - start, count)
        }
        loop.shutdownGracefully()
    }

    func report(_ name: String, _ nanoseconds: UInt64, _ calls: Int) {
        let tenths = (Double(nanoseconds) * 10 / Double(calls)).rounded()
        print("\(name): \(tenths / 10) ns CPU per call (\(calls) calls)")
    }
}

/// Runs `body` on `loop` and returns its result.
func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in loop.execute { continuation.resume(returning: body()) } }
}

/// A log handler that formats nothing and writes nothing, at info.
struct DroppingLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {}
}

/// The smallest message, for a route to name.
struct PingMessage: GRPCMessage {
    init() {}
    init(serializedBytes: [UInt8]) throws(MessageDecodingError) {}
    func serializedBytes() -> [UInt8] { [] }
}

/// CPU time of this process so far.
func cpuNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
