// The telemetry layer against real peers: a gRPC server and client over loopback sockets, a
// redis-server, a plain HTTP client for /metrics; and the W3C trace-context format, the histogram
// folding and the JSON log format on their own. The platform-wide checks (Prometheus scraping the
// three services, a trace across them) are Tests/interop/test_operations.py.
import EventLoop
import Foundation
import GRPCHTTP2
import GRPCProtos
import GRPCServices
import Instrumentation
import Logging
import Prometheus
import RedisClient
import RPCCore
import Synchronization
@testable import Telemetry
import TestSupport
import Testing
import TraceContext
import Tracing

/// The value of the series `name{labels}` in a text exposition (nil when absent).
func value(in exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// Polls `check` until true or `limit` passes (long, for a loaded CI host: true comes at once
/// when all is well).
func eventually(within limit: Duration = .seconds(15), _ check: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await check() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await check()
}

/// Spans kept in memory, as an exporter receives them.
final class CollectedSpans: SpanExporter {
    let spans = Mutex<[FinishedSpan]>([])
    func export(_ span: FinishedSpan) { spans.withLock { $0.append(span) } }
    func flush() {}
    var all: [FinishedSpan] { spans.withLock { $0 } }
}

/// Log lines kept in memory.
final class CollectedLines: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var objects: [[String: Any]] {
        all.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
    func logger(_ label: String = "test") -> Logger {
        Logger(label: label) { label in
            var handler = JSONLogHandler(label: label, metadataProvider: .traceContext) { line in
                self.lines.withLock { $0.append(line) }
            }
            handler.logLevel = .debug
            return handler
        }
    }
}

@Suite struct TraceContextTests {
    @Test func parsesAndFormatsTraceparent() throws {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let context = try #require(TraceContext(traceparent: text, traceState: "congo=t61rcWkgMzE"))
        #expect(context.traceIDHex == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(context.spanIDHex == "00f067aa0ba902b7")
        #expect(context.sampled)
        #expect(context.traceState == "congo=t61rcWkgMzE")
        #expect(context.traceparent == text)
        #expect(TraceContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.sampled == false)
    }

    @Test(arguments: [
        "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    ])
    func refusesInvalidTraceparent(_ text: String) {
        #expect(TraceContext(traceparent: text) == nil)
    }

    @Test func aLaterVersionIsReadByItsFirstFields() {
        let context = TraceContext(traceparent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next")
        #expect(context?.traceIDHex == "4bf92f3577b34da6a3ce929d0e0e4736")
    }

    @Test func childrenKeepTheTraceWithNewSpans() {
        let root = TraceContext.newTrace()
        let children = (0..<1000).map { _ in root.child() }
        #expect(children.allSatisfy { $0.traceID == root.traceID && $0.sampled })
        #expect(Set(children.map(\.spanID)).count == 1000)
        #expect(!children.contains { $0.spanID == root.spanID || $0.spanID == 0 })
        #expect(TraceContext.newTrace().traceID != root.traceID)
    }
}

@Suite struct MetricsTests {
    /// A health service on a server observed by `GRPCServerMetrics`, and a channel to it.
    struct ObservedServer {
        let metrics = ServiceMetrics()
        let server: GRPCServer
        let channel: GRPCChannel
        let health = HealthService(services: ["svc"])

        init(interceptors: [any ServerInterceptor] = []) throws {
            server = GRPCServer(configuration: ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 2),
                                services: [health.service], interceptors: interceptors, observer: GRPCServerMetrics(metrics))
            try server.start()
            channel = GRPCChannel(host: "127.0.0.1", port: server.port)
        }

        var client: HealthClient { HealthClient(transport: channel) }

        func exposition() async -> String { String(decoding: await metrics.exposition(), as: UTF8.self) }

        func stop() async {
            channel.close()
            await server.shutdown(gracePeriod: .milliseconds(200))
        }
    }

    static let check = #"grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check""#
    static let watch = #"grpc_type="server_stream",grpc_service="grpc.health.v1.Health",grpc_method="Watch""#

    @Test func serverMetricsCountCallsMessagesAndCodes() async throws {
        let observed = try ObservedServer()
        for _ in 0..<3 { _ = try await observed.client.check(HealthCheckRequest(service: "svc")) }
        for _ in 0..<2 {
            await #expect(throws: RPCError.self) { try await observed.client.check(HealthCheckRequest(service: "nope")) }
        }
        // A watch read once, then cancelled by the client.
        let first = try await observed.client.watch(HealthCheckRequest(service: "svc")) { responses in
            var iterator = responses.makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(first?.status == .serving)

        let check = Self.check, watch = Self.watch
        var text = await observed.exposition()
        // Every series of every method exists, at zero when nothing happened.
        #expect(value(in: text, "grpc_server_handled_total{\(check),grpc_code=\"DataLoss\"}") == 0)
        #expect(value(in: text, "grpc_server_started_total{\(check)}") == 5)
        #expect(value(in: text, "grpc_server_msg_received_total{\(check)}") == 5)
        #expect(value(in: text, "grpc_server_msg_sent_total{\(check)}") == 3)
        #expect(value(in: text, "grpc_server_handled_total{\(check),grpc_code=\"OK\"}") == 3)
        #expect(value(in: text, "grpc_server_handled_total{\(check),grpc_code=\"NotFound\"}") == 2)
        #expect(value(in: text, "grpc_server_handling_seconds_count{\(check)}") == 5)
        #expect(value(in: text, "grpc_server_handling_seconds_bucket{\(check),le=\"+Inf\"}") == 5)
        #expect((value(in: text, "grpc_server_handling_seconds_sum{\(check)}") ?? 0) > 0)
        #expect(value(in: text, "grpc_server_started_total{\(watch)}") == 1)
        #expect(value(in: text, "grpc_server_msg_received_total{\(watch)}") == 1)
        #expect(value(in: text, "grpc_server_msg_sent_total{\(watch)}") == 1)
        // The cancelled watch ends as Canceled once its reset reaches the server; counts add up
        // across scrapes (a scrape takes what the loops counted since the last one).
        let ended = await eventually {
            text = await observed.exposition()
            return value(in: text, "grpc_server_handled_total{\(watch),grpc_code=\"Canceled\"}") == 1
        }
        #expect(ended)
        #expect(value(in: text, "grpc_server_started_total{\(check)}") == 5)
        await observed.stop()
    }

    @Test func callsTheTransportEndsAreCountedOnceAndUnknownMethodsNot() async throws {
        let metrics = ServiceMetrics()
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 1)
        configuration.maxMessageSize = 64
        let health = HealthService(services: ["svc"])
        let server = GRPCServer(configuration: configuration, services: [health.service], observer: GRPCServerMetrics(metrics))
        try server.start()
        let channel = GRPCChannel(host: "127.0.0.1", port: server.port)
        let client = HealthClient(transport: channel)
        let unknown = await #expect(throws: RPCError.self) {
            try await channel.unary(path: "/grpc.health.v1.Health/Nope", request: [], options: CallOptions())
        }
        #expect(unknown?.code == .unimplemented)
        let large = await #expect(throws: RPCError.self) {
            try await client.check(HealthCheckRequest(service: String(repeating: "s", count: 200)))
        }
        #expect(large?.code == .resourceExhausted)
        let late = await #expect(throws: RPCError.self) {
            try await client.watch(HealthCheckRequest(service: "svc"), options: CallOptions(timeout: .milliseconds(200))) { responses in
                for try await _ in responses {}
            }
        }
        #expect(late?.code == .deadlineExceeded)
        let check = Self.check, watch = Self.watch
        // The watch ends once on the server: by its own deadline timer, or by the client's reset
        // when the client's timer fired first (both run out together).
        var text = ""
        var ended = (deadline: 0.0, cancelled: 0.0)
        let counted = await eventually {
            text = String(decoding: await metrics.exposition(), as: UTF8.self)
            ended = (value(in: text, "grpc_server_handled_total{\(watch),grpc_code=\"DeadlineExceeded\"}") ?? 0,
                     value(in: text, "grpc_server_handled_total{\(watch),grpc_code=\"Canceled\"}") ?? 0)
            return ended.deadline + ended.cancelled >= 1
        }
        #expect(counted)
        #expect(ended.deadline + ended.cancelled == 1)
        #expect(!text.contains("Nope"))
        #expect(value(in: text, "grpc_server_started_total{\(check)}") == 1)
        #expect(value(in: text, "grpc_server_handled_total{\(check),grpc_code=\"ResourceExhausted\"}") == 1)
        #expect(value(in: text, "grpc_server_msg_received_total{\(check)}") == 0)
        #expect(value(in: text, "grpc_server_started_total{\(watch)}") == 1)
        channel.close()
        await server.shutdown(gracePeriod: .milliseconds(200))
    }

    @Test func foldingLoopCountsIsExact() {
        let registry = PrometheusCollectorRegistry()
        let direct = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(metricName: "direct", unitName: "", helpText: "x"), buckets: LatencyBuckets.calls.seconds)
        let folded = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(metricName: "folded", unitName: "", helpText: "x"), buckets: LatencyBuckets.calls.seconds)
        var tally = HistogramTally(slots: 2, buckets: .calls)
        var random = SplitMix64(seed: 7)
        for _ in 0..<5000 {
            // From 1 µs to about 30 s, spread over every bucket, on the bounds too.
            let nanoseconds = random.next() % 4 == 0 ? 250_000 : Int64(pow(10, 3 + Double(random.next() % 10_000) / 1500))
            direct.record(Double(nanoseconds) / 1e9)
            tally.record(slot: 1, .nanoseconds(nanoseconds))
        }
        tally.fold(slot: 1, into: folded)
        let text = registry.emitToString()
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        let directLines = lines.filter { $0.hasPrefix("direct") }.map { $0.dropFirst("direct".count) }
        let foldedLines = lines.filter { $0.hasPrefix("folded") }.map { $0.dropFirst("folded".count) }
        #expect(directLines.count == LatencyBuckets.calls.seconds.count + 3)
        // Every bucket and the count exactly; the sum to within the rounding of doubles.
        #expect(directLines.filter { !$0.hasPrefix("_sum") } == foldedLines.filter { !$0.hasPrefix("_sum") })
        let sums = [directLines, foldedLines].map { lines in Double(lines.first { $0.hasPrefix("_sum") }!.split(separator: " ")[1])! }
        #expect(abs(sums[0] - sums[1]) <= sums[0] * 1e-9)
    }

    @Test func clientMetricsCountCallsByCode() async throws {
        let observed = try ObservedServer()
        let metrics = ServiceMetrics()
        let transport = InstrumentedClientTransport(observed.channel, methods: [HealthMethods.check.path], metrics: metrics,
                                                    tracer: PlatformTracer(exporter: nil))
        let client = HealthClient(transport: transport)
        _ = try await client.check(HealthCheckRequest(service: "svc"))
        await #expect(throws: RPCError.self) { try await client.check(HealthCheckRequest(service: "nope")) }
        let text = String(decoding: await metrics.exposition(), as: UTF8.self)
        let check = Self.check
        #expect(value(in: text, "grpc_client_started_total{\(check)}") == 2)
        #expect(value(in: text, "grpc_client_msg_sent_total{\(check)}") == 2)
        #expect(value(in: text, "grpc_client_msg_received_total{\(check)}") == 1)
        #expect(value(in: text, "grpc_client_handled_total{\(check),grpc_code=\"OK\"}") == 1)
        #expect(value(in: text, "grpc_client_handled_total{\(check),grpc_code=\"NotFound\"}") == 1)
        #expect(value(in: text, "grpc_client_handling_seconds_count{\(check)}") == 2)
        await observed.stop()
    }

    @Test func redisMetricsCountCommandsErrorsAndLatency() async throws {
        let server = try await RedisServer.started()
        let metrics = ServiceMetrics()
        let redis = RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port), observer: RedisMetrics(metrics))
        for index in 0..<4 { _ = try await redis.send(["SET", "key\(index)", "value"]) }
        _ = try await redis.send(["GET", "key0"])
        do {
            _ = try await redis.send(["INCR", "key0"])
            Issue.record("INCR of a non-number succeeded")
        } catch {
            guard case .server = error.kind else { Issue.record("INCR failed with \(error)"); return }
        }
        var text = String(decoding: await metrics.exposition(), as: UTF8.self)
        #expect(value(in: text, #"redis_commands_total{command="SET"}"#) == 4)
        #expect(value(in: text, #"redis_commands_total{command="GET"}"#) == 1)
        #expect(value(in: text, #"redis_commands_total{command="INCR"}"#) == 1)
        #expect(value(in: text, #"redis_command_errors_total{kind="ERR"}"#) == 1)
        #expect((value(in: text, "redis_command_duration_seconds_count") ?? 0) >= 6)
        #expect(value(in: text, "redis_reconnects_total") == 0)
        #expect(value(in: text, #"redis_cluster_redirects_total{type="moved"}"#) == 0)
        // Redis restarts: the connection is made again, and counted (after the client's backoff,
        // which a loaded machine's slow restart can stretch). At least once: the immediate first
        // attempt can still land in the dying server's listen backlog, connect, and be reset.
        server.kill()
        try await server.relaunch()
        let reconnected = await eventually(within: .seconds(20)) {
            _ = try? await redis.send(["PING"])
            text = String(decoding: await metrics.exposition(), as: UTF8.self)
            return (value(in: text, "redis_reconnects_total") ?? 0) >= 1
        }
        #expect(reconnected, "redis_reconnects_total is \(String(describing: value(in: text, "redis_reconnects_total")))")
        redis.close()
    }

    @Test func redisMetricsCountCacheHitsAndMisses() async throws {
        let server = try await RedisServer.started()
        let metrics = ServiceMetrics()
        let redis = RedisClient(configuration: RedisConfiguration(host: server.host, port: server.port, readCacheCapacity: 10),
                                observer: RedisMetrics(metrics))
        defer { redis.close() }
        let library = "#!lua name=metricstest\nredis.register_function('read', function(keys) return {redis.call('GET', keys[1])} end)"
        _ = try await redis.send(["SET", "cached", "1"])
        var text = ""
        // The first reads connect the cache; then each is a hit.
        let hit = await eventually {
            _ = try? await redis.call(function: "read", library: library, keys: ["cached"], arguments: [], cachingReplyIf: { _ in true })
            text = String(decoding: await metrics.exposition(), as: UTF8.self)
            return (value(in: text, #"redis_cache_reads_total{outcome="hit"}"#) ?? 0) >= 1
        }
        #expect(hit, "\(text)")
        #expect((value(in: text, #"redis_cache_reads_total{outcome="miss"}"#) ?? 0) >= 1)
    }

    @Test func aSlowCollectorDoesNotHoldTheScrape() async {
        let metrics = ServiceMetrics()
        metrics.addGauge("quick", help: "Read at once.") { 7 }
        metrics.addCollector { try? await Task.sleep(for: .seconds(30)) }
        let started = ContinuousClock.now
        let text = String(decoding: await metrics.exposition(), as: UTF8.self)
        // Well under the collector's 30 s: the scrape gave up on it after its 1 s. (Not tighter:
        // under the full parallel suite the pool's two threads can be held by other tests'
        // synchronous server starts for seconds; a full run once took 7 s here.)
        let waited = ContinuousClock.now - started
        #expect(waited < .seconds(15), "the scrape took \(waited)")
        #expect(value(in: text, "quick") == 7)
    }

    @Test func processMetricsDescribeThisProcess() async {
        let metrics = ServiceMetrics()
        addProcessMetrics(to: metrics)
        let text = String(decoding: await metrics.exposition(), as: UTF8.self)
        #expect((value(in: text, "process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((value(in: text, "process_open_fds") ?? 0) >= 3)
        #expect((value(in: text, "process_max_fds") ?? 0) >= (value(in: text, "process_open_fds") ?? 0))
        let started = value(in: text, "process_start_time_seconds") ?? 0
        #expect(abs(started - Date().timeIntervalSince1970) < 24 * 3600)
        #expect(text.contains("# TYPE process_cpu_seconds_total counter"))
    }
}

@Suite struct MetricsEndpointTests {
    /// One HTTP/1.1 exchange with the endpoint; the whole answer.
    func exchange(_ port: Int, _ request: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &chunk, chunk.count, 0)
            if count <= 0 { break }
            answer += chunk[..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    @Test func servesTheExpositionAndRefusesTheRest() async throws {
        let metrics = ServiceMetrics()
        let counter = metrics.counter("things_total", "Things.")
        counter.increment(by: Int64(3))
        let endpoint = try MetricsEndpoint(host: "127.0.0.1", port: 0, metrics: metrics)
        let port = endpoint.port
        let ok = try await ChildProcess.offload { try exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") }
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(ok.contains("\r\n\r\n# HELP things_total Things.\n# TYPE things_total counter\nthings_total 3\n"))
        let body = ok.components(separatedBy: "\r\n\r\n")[1]
        #expect(ok.contains("Content-Length: \(body.utf8.count)\r\n"))
        let head = try await ChildProcess.offload { try exchange(port, "HEAD /metrics?x=1 HTTP/1.1\r\n\r\n") }
        #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n") && head.hasSuffix("\r\n\r\n"))
        let missing = try await ChildProcess.offload { try exchange(port, "GET / HTTP/1.1\r\n\r\n") }
        #expect(missing.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        let posted = try await ChildProcess.offload { try exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n") }
        #expect(posted.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        let huge = "GET /metrics HTTP/1.1\r\n" + String(repeating: "X-Filler: 0123456789\r\n", count: 1000)
        let tooLarge = try await ChildProcess.offload { try exchange(port, huge) }
        #expect(tooLarge.hasPrefix("HTTP/1.1 431 "))
        // Still serving after all that.
        let again = try await ChildProcess.offload { try exchange(port, "GET /metrics HTTP/1.0\r\n\r\n") }
        #expect(again.contains("things_total 3"))
        endpoint.close()
    }
}

@Suite struct TracingAndLogTests {
    /// A unary method of health's messages that is not health's (whose successes log at debug).
    static let probe = MethodDescriptor<HealthCheckRequest, HealthCheckResponse>(service: "probe.Probe", method: "Check")

    @Test func aCallContinuesTheCallersTraceAndLogsOneLine() async throws {
        let spans = CollectedSpans()
        let lines = CollectedLines()
        let tracer = PlatformTracer(exporter: spans)
        let seen = Mutex<[TraceContext?]>([])
        let service = ServiceDefinition(name: "probe.Probe", routes: [
            Route(Self.probe) { (request: HealthCheckRequest, _: ServerContext) in
                seen.withLock { $0.append(InstrumentationContext.current?.traceContext) }
                lines.logger("handler").info("inside", metadata: ["order": "order_1"])
                guard request.service.isEmpty else { throw RPCError(.notFound, "no \(request.service)") }
                return HealthCheckResponse(status: .serving)
            },
        ])
        let server = GRPCServer(configuration: ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 1),
                                services: [service, HealthService(services: []).service],
                                interceptors: [CallTelemetry(tracer: tracer, logger: lines.logger("calls"))])
        try server.start()
        let channel = GRPCChannel(host: "127.0.0.1", port: server.port)
        let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        var metadata = Metadata()
        metadata.add("traceparent", caller)
        _ = try await channel.call(Self.probe, HealthCheckRequest(), options: CallOptions(metadata: metadata))
        await #expect(throws: RPCError.self) { try await channel.call(Self.probe, HealthCheckRequest(service: "x")) }
        // A request that does not decode never reaches the handler, and is logged all the same.
        await #expect(throws: RPCError.self) {
            try await channel.unary(path: Self.probe.path, request: [0xFF, 0xFF, 0xFF], options: CallOptions())
        }
        // A health check that succeeds is logged at debug (probes come every few seconds).
        _ = try await HealthClient(transport: channel).check(HealthCheckRequest())
        channel.close()
        await server.shutdown(gracePeriod: .milliseconds(200))

        // The handler ran in a child of the caller's span; the second call started a trace.
        let contexts = seen.withLock { $0 }
        #expect(contexts.count == 2)
        #expect(contexts[0]?.traceIDHex == "0af7651916cd43dd8448eb211c80319c")
        #expect(contexts[0]?.spanIDHex != "b7ad6b7169203331")
        #expect(contexts[1].map { $0.traceIDHex != "0af7651916cd43dd8448eb211c80319c" } == true)
        let finished = spans.all.filter { $0.name == Self.probe.path }
        #expect(finished.count == 2)
        #expect(finished.first?.parentSpanID == TraceContext(traceparent: caller)?.spanID)
        #expect(finished.first?.kind == .server)
        #expect(finished.first.map { $0.context == contexts[0] } == true)
        #expect(finished.last?.parentSpanID == nil)
        #expect(finished.last?.status?.isError == true)
        #expect(finished.allSatisfy { $0.endNanosecondsSinceEpoch >= $0.startNanosecondsSinceEpoch })

        // The handler's line and the call's line carry the trace; the call's has the outcome.
        let objects = lines.objects
        let inside = objects.filter { $0["message"] as? String == "inside" }
        let calls = objects.filter { $0["message"] as? String == "rpc" && $0["method"] as? String == Self.probe.path }
        let health = objects.filter { $0["message"] as? String == "rpc" && $0["method"] as? String == HealthMethods.check.path }
        #expect(health.count == 1 && health.first?["level"] as? String == "debug")
        #expect(inside.count == 2 && calls.count == 3)
        #expect(inside.first?["trace_id"] as? String == "0af7651916cd43dd8448eb211c80319c")
        #expect(inside.first?["order"] as? String == "order_1")
        #expect(calls.first?["trace_id"] as? String == "0af7651916cd43dd8448eb211c80319c")
        #expect(calls.first?["code"] as? String == "OK")
        #expect(calls.first?["peer"] as? String == "127.0.0.1")
        #expect(calls.first?["level"] as? String == "info")
        #expect(calls[1]["code"] as? String == "NOT_FOUND")
        #expect(calls[1]["error"] as? String == "no x")
        #expect(calls.last?["code"] as? String == "INTERNAL")
        #expect(calls.last?["level"] as? String == "error")
        #expect(calls.allSatisfy { Double($0["duration_ms"] as? String ?? "") != nil })
    }

    @Test func theClientTransportCarriesTheTraceInAClientSpan() async throws {
        let spans = CollectedSpans()
        let tracer = PlatformTracer(exporter: spans)
        let received = Mutex<[String?]>([])
        let service = ServiceDefinition(name: "probe.Probe", routes: [
            Route(Self.probe) { (_: HealthCheckRequest, context: ServerContext) in
                received.withLock { $0.append(context.requestMetadata["traceparent"]) }
                return HealthCheckResponse(status: .serving)
            },
        ])
        let server = GRPCServer(configuration: ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 1), services: [service])
        try server.start()
        let channel = GRPCChannel(host: "127.0.0.1", port: server.port)
        let transport = InstrumentedClientTransport(channel, methods: [], metrics: nil, tracer: tracer)
        var parent = InstrumentationContext.topLevel
        parent.traceContext = TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        try await InstrumentationContext.$current.withValue(parent) {
            _ = try await transport.call(Self.probe, HealthCheckRequest())
        }
        channel.close()
        await server.shutdown(gracePeriod: .milliseconds(200))
        let span = try #require(spans.all.first)
        #expect(span.kind == .client)
        #expect(span.parentSpanID == 0xb7ad6b7169203331)
        #expect(received.withLock { $0 } == [span.context.traceparent])
    }

    @Test func withoutAnExporterNothingIsRecordedButTheTraceTravels() {
        let tracer = PlatformTracer(exporter: nil)
        var parent = InstrumentationContext.topLevel
        parent.traceContext = TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        let span = tracer.startSpan("x", context: parent, ofKind: .server)
        #expect(!span.isRecording)
        span.attributes["ignored"] = "yes"
        #expect(span.attributes.isEmpty)
        #expect(span.context.traceContext?.traceIDHex == "0af7651916cd43dd8448eb211c80319c")
        var metadata = Metadata()
        tracer.inject(span.context, into: &metadata, using: MetadataInjector())
        #expect(metadata["traceparent"] == span.context.traceContext?.traceparent)
        span.end()
    }

    @Test func jsonLinesEscapeAndNestMetadata() throws {
        let lines = CollectedLines()
        let logger = lines.logger("json")
        logger.warning("a \"quoted\"\nline\u{1}", metadata: ["list": ["a", "b"], "map": ["k": "v"], "number": "\(42)"])
        let line = try #require(lines.all.first)
        #expect(line.hasSuffix("}\n") && line.split(separator: "\n").count == 1)
        let object = try #require(lines.objects.first)
        #expect(object["message"] as? String == "a \"quoted\"\nline\u{1}")
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "json")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect(object["map"] as? [String: String] == ["k": "v"])
        #expect(object["trace_id"] == nil)
        let time = try #require(object["time"] as? String)
        #expect(time.count == 24 && time.hasSuffix("Z"))
    }

    @Test func otlpJSONHasTheSpecificationsShape() throws {
        let trace = try #require(TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        let span = FinishedSpan(name: "op \"1\"", kind: .consumer, context: trace, parentSpanID: 0x1122334455667788,
                                startNanosecondsSinceEpoch: 1_000, endNanosecondsSinceEpoch: 2_500,
                                attributes: [("order", .string("order_1")), ("count", .int64(3))],
                                status: (true, "failed"), events: [])
        let json = OTLPJSON.traces([span], serviceName: "svc")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let resource = try #require((object["resourceSpans"] as? [[String: Any]])?.first)
        let attributes = (resource["resource"] as? [String: Any])?["attributes"] as? [[String: Any]]
        #expect((attributes?.first?["value"] as? [String: String])?["stringValue"] == "svc")
        let exported = try #require(((resource["scopeSpans"] as? [[String: Any]])?.first?["spans"] as? [[String: Any]])?.first)
        #expect(exported["traceId"] as? String == "0af7651916cd43dd8448eb211c80319c")
        #expect(exported["spanId"] as? String == "b7ad6b7169203331")
        #expect(exported["parentSpanId"] as? String == "1122334455667788")
        #expect(exported["name"] as? String == "op \"1\"")
        #expect(exported["kind"] as? Int == 5)
        #expect(exported["startTimeUnixNano"] as? String == "1000")
        #expect(exported["endTimeUnixNano"] as? String == "2500")
        #expect((exported["status"] as? [String: Any])?["code"] as? Int == 2)
        let spanAttributes = exported["attributes"] as? [[String: Any]]
        #expect((spanAttributes?.last?["value"] as? [String: String])?["intValue"] == "3")
    }
}
