// Distributed tracing on swift-distributed-tracing's API, with W3C Trace Context on the wire.
//
// Every served call runs in a server span (CallTelemetry starts it): the caller's `traceparent`
// makes it a child of the caller's span, and without one it starts a trace. The span's trace
// context is the task's (`TraceContext.active`) for the whole call, so that the call's log lines
// carry its trace id (LogFormat's metadata provider), its calls to another service carry
// `traceparent` (InstrumentedClientTransport injects it), and the events it appends carry it too
// (the delivery service's automatic assignment then continues the accept's trace).
//
// Propagation always happens: it is an id in a header and a field. Recording does not, unless an
// exporter is configured (OTEL_EXPORTER_OTLP_ENDPOINT). Without one, a served call binds its
// trace context alone, as one task-local value (`TraceContext.current`), and never builds
// swift-distributed-tracing's context, whose dictionary costs far more than the ids (measured:
// BENCHMARKS.md "Metrics on and off"); a span started through the API is a value holding its
// context and nothing else. With an exporter, spans are timed and end into its batch.
import Instrumentation
import RPCCore
import Synchronization
import TraceContext
import Tracing

/// Where finished spans go (the OTLP exporter).
public protocol SpanExporter: Sendable {
    func export(_ span: FinishedSpan)
    /// Sends what is batched, now.
    func flush()
}

/// A span once it ended, as an exporter sees it.
public struct FinishedSpan: Sendable {
    public var name: String
    public var kind: SpanKind
    public var context: TraceContext
    public var parentSpanID: UInt64?
    public var startNanosecondsSinceEpoch: UInt64
    public var endNanosecondsSinceEpoch: UInt64
    public var attributes: [(String, SpanAttribute)]
    /// Nil: unset; else whether it ended in error, and why.
    public var status: (isError: Bool, message: String?)?
    public var events: [SpanEvent]
}

/// The platform's tracer: W3C propagation always; spans recorded only with an exporter.
public struct PlatformTracer: Tracer {
    private let exporter: (any SpanExporter)?

    public init(exporter: (any SpanExporter)?) { self.exporter = exporter }

    /// Whether spans are recorded (an exporter takes them).
    public var isRecording: Bool { exporter != nil }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> InstrumentationContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> PlatformSpan {
        var spanContext = context()
        let parent = spanContext.traceContext
        let trace = parent?.child() ?? .newTrace()
        spanContext.traceContext = trace
        guard let exporter, trace.sampled else { return PlatformSpan(context: spanContext, recording: nil) }
        let recording = PlatformSpan.Recording(name: operationName, kind: kind, trace: trace, parent: parent?.spanID,
                                               start: instant().nanosecondsSinceEpoch, exporter: exporter)
        return PlatformSpan(context: spanContext, recording: recording)
    }

    public func activeSpan(identifiedBy context: InstrumentationContext) -> PlatformSpan? { nil }

    public func forceFlush() { exporter?.flush() }

    public func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout InstrumentationContext,
                                                     using extractor: Extract) where Extract.Carrier == Carrier {
        guard let parent = extractor.extract(key: "traceparent", from: carrier),
              let trace = TraceContext(traceparent: parent, traceState: extractor.extract(key: "tracestate", from: carrier)) else { return }
        context.traceContext = trace
    }

    public func inject<Carrier, Inject: Injector>(_ context: InstrumentationContext, into carrier: inout Carrier,
                                                  using injector: Inject) where Inject.Carrier == Carrier {
        guard let trace = context.traceContext else { return }
        for (name, value) in Self.headers(naming: trace) { injector.inject(value, forKey: name, into: &carrier) }
    }

    /// `traceparent`, and `tracestate` when the trace has one.
    static func headers(naming trace: TraceContext) -> [(String, String)] {
        [("traceparent", trace.traceparent)] + (trace.traceState.map { [("tracestate", $0)] } ?? [])
    }
}

extension Metadata {
    /// Adds the headers that carry `trace` to the callee.
    mutating func addTrace(_ trace: TraceContext) {
        for (name, value) in PlatformTracer.headers(naming: trace) { add(name, value) }
    }
}

/// A span of `PlatformTracer`: its context, and what is recorded when an exporter is set.
public struct PlatformSpan: Tracing.Span {
    public let context: InstrumentationContext
    fileprivate let recording: Recording?

    fileprivate init(context: InstrumentationContext, recording: Recording?) {
        self.context = context
        self.recording = recording
    }

    public var isRecording: Bool { recording != nil }

    public var operationName: String {
        get { recording?.state.withLock { $0.name } ?? "" }
        nonmutating set { recording?.state.withLock { $0.name = newValue } }
    }

    public var attributes: SpanAttributes {
        get { recording?.state.withLock { $0.attributes } ?? [:] }
        nonmutating set { recording?.state.withLock { $0.attributes = newValue } }
    }

    public func setStatus(_ status: SpanStatus) {
        recording?.state.withLock { $0.status = (status.code == .error, status.message) }
    }

    public func addEvent(_ event: SpanEvent) {
        recording?.state.withLock { $0.events.append(event) }
    }

    public func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        guard let recording else { return }
        var attributes = attributes
        attributes["exception.message"] = "\(error)"
        let event = SpanEvent(name: "exception", at: instant(), attributes: attributes)
        recording.state.withLock { $0.events.append(event) }
    }

    public func addLink(_ link: SpanLink) {}

    public func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        recording?.end(at: instant().nanosecondsSinceEpoch)
    }

    /// What a recorded span accumulates until it ends.
    final class Recording: Sendable {
        struct State {
            var name: String
            var attributes: SpanAttributes = [:]
            var status: (isError: Bool, message: String?)?
            var events: [SpanEvent] = []
            var ended = false
        }

        let state: Mutex<State>
        let kind: SpanKind
        let trace: TraceContext
        let parent: UInt64?
        let start: UInt64
        let exporter: any SpanExporter

        init(name: String, kind: SpanKind, trace: TraceContext, parent: UInt64?, start: UInt64, exporter: any SpanExporter) {
            state = Mutex(State(name: name))
            (self.kind, self.trace, self.parent, self.start, self.exporter) = (kind, trace, parent, start, exporter)
        }

        func end(at end: UInt64) {
            let finished = state.withLock { state -> FinishedSpan? in
                guard !state.ended else { return nil }
                state.ended = true
                var attributes: [(String, SpanAttribute)] = []
                state.attributes.forEach { attributes.append(($0, $1)) }
                return FinishedSpan(name: state.name, kind: kind, context: trace, parentSpanID: parent,
                                    startNanosecondsSinceEpoch: start, endNanosecondsSinceEpoch: end,
                                    attributes: attributes, status: state.status, events: state.events)
            }
            if let finished { exporter.export(finished) }
        }
    }
}

/// Reads trace headers from gRPC request metadata.
public struct MetadataExtractor: Extractor {
    public init() {}
    public func extract(key: String, from carrier: Metadata) -> String? { carrier[key] }
}

/// Writes trace headers into gRPC request metadata.
public struct MetadataInjector: Injector {
    public init() {}
    public func inject(_ value: String, forKey key: String, into carrier: inout Metadata) { carrier.add(key, value) }
}
