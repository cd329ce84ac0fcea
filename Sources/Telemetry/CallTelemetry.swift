// What every served call gets beyond metrics: a server span around the whole call, and one log
// line when it ends.
//
// The span continues the caller's trace (`traceparent`, `tracestate` in the request metadata) or
// starts one, and its trace context is the task's while the call runs, so that everything the
// handler logs, calls or appends carries the trace. When spans are not recorded, only that
// context is bound (Tracing.swift says why). The log line, at `info` (at `error` for
// the codes that mean our side or a dependency failed, with the status message as the cause),
// has the method, code, duration, peer, caller identity (when an interceptor established one)
// and, from the task's context, the trace id; a health check that succeeds logs at `debug`, or the
// probes of every orchestrator would fill the log. It must be the first interceptor, so that
// the others' refusals are logged and traced too. The line tells how the handler ended: when the
// transport answered first (the deadline passed, the client reset the stream), the client saw
// that answer, which `grpc_server_handled_total` counts.
import EventLoop
import Instrumentation
import Logging
import RPCCore
import TraceContext
import Tracing

/// The tracing and logging interceptor; first in the list.
public struct CallTelemetry: ServerInterceptor {
    private let tracer: PlatformTracer
    private let logger: Logger
    private let caller: @Sendable (ServerContext) -> String?

    /// `caller` names who called, once authentication has run (nil: unknown, or anonymous).
    public init(tracer: PlatformTracer, logger: Logger, caller: @escaping @Sendable (ServerContext) -> String? = { _ in nil }) {
        self.tracer = tracer
        self.logger = logger
        self.caller = caller
    }

    public func intercept(_ request: (any GRPCMessage)?, context: ServerContext) async throws(RPCError) {}

    nonisolated(nonsending) public func scope<Result>(_ context: ServerContext,
                                                      _ call: nonisolated(nonsending) () async throws -> Result) async throws -> Result {
        let caller = context.requestMetadata["traceparent"].flatMap {
            TraceContext(traceparent: $0, traceState: context.requestMetadata["tracestate"])
        }
        guard tracer.isRecording else {
            // No span of ours: the caller's context goes on unchanged, so that spans downstream
            // name a parent some service did export.
            return try await TraceContext.$current.withValue(caller ?? .newTrace(), operation: call)
        }
        var parent = InstrumentationContext.topLevel
        parent.traceContext = caller
        let span = tracer.startSpan(context.path, context: parent, ofKind: .server)
        defer { span.end() }
        return try await TraceContext.$current.withValue(span.context.traceContext) {
            try await InstrumentationContext.$current.withValue(span.context) {
                do {
                    let result = try await call()
                    label(span, context, .ok)
                    return result
                } catch {
                    let status = RPCError(from: error)
                    label(span, context, status.code)
                    span.setStatus(SpanStatus(code: .error, message: status.message))
                    throw error
                }
            }
        }
    }

    public func finished(_ status: RPCError, request: (any GRPCMessage)?, response: @autoclosure () -> (any GRPCMessage)?,
                         context: ServerContext) {
        let level: Logger.Level
        switch status.code {
        case .internal, .unknown, .unavailable, .dataLoss: level = .error
        // Most calls, when only trouble is logged: nothing more to decide.
        case _ where logger.logLevel > .info: return
        case .ok where context.path.hasPrefix("/grpc.health.v1.Health/"): level = .debug
        default: level = .info
        }
        logger.log(level: level, "rpc", metadata: callMetadata(status, context))
    }

    private func callMetadata(_ status: RPCError, _ context: ServerContext) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            "method": .string(context.path),
            "code": .string(status.code.description),
            // Milliseconds to the microsecond.
            "duration_ms": .stringConvertible(Double((ContinuousClock.now - context.started).nanoseconds / 1000) / 1000),
            "peer": .string(context.remotePeer),
        ]
        if let caller = caller(context) { metadata["caller"] = .string(caller) }
        if status.code != .ok, !status.message.isEmpty { metadata["error"] = .string(status.message) }
        return metadata
    }

    /// OpenTelemetry's RPC attributes.
    private func label(_ span: PlatformSpan, _ context: ServerContext, _ code: StatusCode) {
        let parts = context.path.split(separator: "/")
        span.updateAttributes { attributes in
            attributes["rpc.system"] = "grpc"
            attributes["rpc.service"] = parts.first.map(String.init) ?? ""
            attributes["rpc.method"] = parts.count > 1 ? String(parts[1]) : ""
            attributes["rpc.grpc.status_code"] = Int64(code.rawValue)
            attributes["net.peer.ip"] = context.remotePeer
        }
    }
}
