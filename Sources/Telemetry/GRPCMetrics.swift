// gRPC metrics with go-grpc-prometheus' names and labels (`grpc_type`, `grpc_service`,
// `grpc_method`, `grpc_code`), which gRPC dashboards and alerts expect:
// - the server's, from the transport's per-loop call recorders (`ServerCallObserver`): counted in
//   loop memory on the request path, folded into the registry when scraped;
// - a client's, from a transport decorator around the calls one service makes to another (which
//   also carries the trace). Those calls are few (an accept, a priced order), so it counts
//   straight into the registry: its counters are atomics; only the latency histogram's record
//   takes swift-prometheus' lock.
// Every series of every served method (and every code) exists from the start at zero, as
// go-grpc-prometheus' pre-initialisation makes them, so rates and alerts see a method before its
// first failure.
import EventLoop
import GRPCHTTP2
import Instrumentation
import Prometheus
import RPCCore
import Synchronization
import TraceContext
import Tracing

/// The labels of one method: `/pkg.Service/Method` split, and its kind.
struct MethodLabels: Sendable {
    let labels: [(String, String)]

    init(path: String, kind: RPCKind) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        let service = parts.first.map(String.init) ?? "unknown"
        let method = parts.count > 1 ? String(parts[1]) : "unknown"
        labels = [("grpc_type", kind.rawValue), ("grpc_service", service), ("grpc_method", method)]
    }
}

/// One method's registry series, for either side (`grpc_server_*` or `grpc_client_*`).
struct MethodSeries: Sendable {
    let started: Prometheus.Counter
    let handled: [Prometheus.Counter]
    let received: Prometheus.Counter
    let sent: Prometheus.Counter
    let handling: ValueHistogram

    init(_ metrics: ServiceMetrics, side: String, _ method: MethodLabels) {
        let party = side == "server" ? "the server" : "the client"
        started = metrics.counter("grpc_\(side)_started_total", "RPCs started on \(party).", method.labels)
        handled = StatusCodeLabel.names.map { code in
            metrics.counter("grpc_\(side)_handled_total", "RPCs completed on \(party), whatever their status.",
                            method.labels + [("grpc_code", code)])
        }
        received = metrics.counter("grpc_\(side)_msg_received_total", "Messages received by \(party).", method.labels)
        sent = metrics.counter("grpc_\(side)_msg_sent_total", "Messages sent by \(party).", method.labels)
        handling = metrics.histogram("grpc_\(side)_handling_seconds",
                                     "How long RPCs took on \(party), from their headers to their status.",
                                     method.labels, buckets: .calls)
    }
}

/// The server's `grpc_server_*` metrics; give it to `GRPCServer(observer:)`.
public final class GRPCServerMetrics: ServerCallObserver {
    private let metrics: ServiceMetrics
    private let recorders = LoopRecorders<Recorder>()
    private let series = SeriesCache()

    public init(_ metrics: ServiceMetrics) {
        self.metrics = metrics
        let recorders = self.recorders, series = self.series
        metrics.addCollector {
            for counts in await recorders.take({ $0.take() }) {
                counts.fold(into: series.series)
            }
        }
    }

    public func makeRecorder(methods: [Route], loop: EventLoop) -> any ServerCallRecorder {
        series.prepare(methods.map { MethodSeries(metrics, side: "server", MethodLabels(path: $0.path, kind: $0.kind)) })
        let recorder = Recorder(methods: methods.count)
        recorders.add(recorder, loop: loop)
        return recorder
    }

    /// The series of the server's methods, made once (every loop has the same methods).
    private final class SeriesCache: Sendable {
        private let state = Mutex<[MethodSeries]>([])
        func prepare(_ made: @autoclosure () -> [MethodSeries]) {
            state.withLock { if $0.isEmpty { $0 = made() } }
        }
        var series: [MethodSeries] { state.withLock { $0 } }
    }

    /// One loop's counts since the last scrape, per method.
    struct Counts: Sendable {
        var started: [Int]
        var received: [Int]
        var sent: [Int]
        /// `method * codes + code`.
        var handled: [Int]
        var handling: HistogramTally

        init(methods: Int) {
            started = Array(repeating: 0, count: methods)
            received = started
            sent = started
            handled = Array(repeating: 0, count: methods * StatusCodeLabel.names.count)
            handling = HistogramTally(slots: methods, buckets: .calls)
        }

        func fold(into series: [MethodSeries]) {
            for (method, methodSeries) in series.enumerated() where method < started.count {
                if started[method] > 0 { methodSeries.started.increment(by: Int64(started[method])) }
                if received[method] > 0 { methodSeries.received.increment(by: Int64(received[method])) }
                if sent[method] > 0 { methodSeries.sent.increment(by: Int64(sent[method])) }
                for code in 0..<StatusCodeLabel.names.count {
                    let count = handled[method * StatusCodeLabel.names.count + code]
                    if count > 0 { methodSeries.handled[code].increment(by: Int64(count)) }
                }
                handling.fold(slot: method, into: methodSeries.handling)
            }
        }
    }

    /// Counts in plain memory; its loop's thread only (so the exclusivity checks Swift would make
    /// on every access, a measurable share of a call's cost, are left out).
    final class Recorder: ServerCallRecorder {
        @exclusivity(unchecked) private var counts: Counts
        private let methods: Int

        init(methods: Int) {
            self.methods = methods
            counts = Counts(methods: methods)
        }

        func started(method: Int) { counts.started[method] += 1 }
        func received(method: Int) { counts.received[method] += 1 }
        func sent(method: Int) { counts.sent[method] += 1 }
        func finished(method: Int, code: StatusCode, duration: Duration) {
            counts.handled[method * StatusCodeLabel.names.count + code.rawValue] += 1
            counts.handling.record(slot: method, duration)
        }

        /// What was counted since the last take; counting starts again from zero.
        func take() -> Counts {
            defer { counts = Counts(methods: methods) }
            return counts
        }
    }
}

/// A client transport for the calls one service makes to another: it counts them as
/// `grpc_client_*`, and runs each in a client span of the current trace whose `traceparent` goes
/// with the call. The methods it may call are named up front, so that their series exist from
/// the start and no call looks anything up under a lock.
public struct InstrumentedClientTransport<Base: ClientTransport>: ClientTransport {
    private let base: Base
    private let tracer: PlatformTracer
    private let series: [String: MethodSeries]
    private let unknown: MethodSeries?

    /// `methods` are the paths of the unary methods this client calls; without `metrics`, the
    /// calls only carry the trace.
    public init(_ base: Base, methods: [String], metrics: ServiceMetrics?, tracer: PlatformTracer) {
        self.base = base
        self.tracer = tracer
        var series: [String: MethodSeries] = [:]
        if let metrics {
            for path in methods { series[path] = MethodSeries(metrics, side: "client", MethodLabels(path: path, kind: .unary)) }
        }
        self.series = series
        unknown = metrics.map { MethodSeries($0, side: "client", MethodLabels(path: "/unknown/unknown", kind: .unary)) }
    }

    public func unary(path: String, request: [UInt8], options: CallOptions) async throws(RPCError) -> UnaryResponse {
        let method = series[path] ?? unknown
        var options = options
        var span: PlatformSpan?
        if tracer.isRecording {
            var parent = InstrumentationContext.current ?? .topLevel
            parent.traceContext = TraceContext.active
            span = tracer.startSpan(path, context: parent, ofKind: .client)
        }
        defer { span?.end() }
        if let trace = span?.context.traceContext ?? TraceContext.active, options.metadata["traceparent"] == nil {
            options.metadata.addTrace(trace)
        }
        let started = ContinuousClock.now
        method?.started.increment()
        method?.sent.increment()
        do {
            let response = try await base.unary(path: path, request: request, options: options)
            method?.received.increment()
            method?.handled[StatusCode.ok.rawValue].increment()
            method?.handling.record(seconds(.now - started))
            return response
        } catch {
            method?.handled[error.code.rawValue].increment()
            method?.handling.record(seconds(.now - started))
            span?.setStatus(SpanStatus(code: .error, message: error.message))
            throw error
        }
    }

    /// A streaming call, passed on with the trace (the services call none of each other's).
    public func withStream<Result: Sendable>(path: String, options: CallOptions,
                                             _ body: (any ClientStream) async throws -> Result) async throws -> Result {
        var options = options
        if let trace = TraceContext.active, options.metadata["traceparent"] == nil { options.metadata.addTrace(trace) }
        return try await base.withStream(path: path, options: options, body)
    }
}

/// A duration in seconds, as the histograms take it.
func seconds(_ duration: Duration) -> Double {
    Double(duration.nanoseconds) / 1e9
}
