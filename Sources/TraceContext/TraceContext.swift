// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` value
// `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>` and the opaque `tracestate`
// that travels with it, as a value in swift-distributed-tracing's `InstrumentationContext`.
//
// The work a task does has one current trace context, `TraceContext.active`: the task-local
// `TraceContext.current` that a served call binds (one value, no allocation: the per-call path
// when no span is recorded), else the one in swift-distributed-tracing's task-local context
// (inside `withSpan`). Whatever carries the trace on (log lines, calls to other services,
// events) reads `active`, so it does not matter which of the two set it.
//
// It is a module of its own, below everything that carries a trace (the services put it in their
// events, the telemetry layer reads and writes it on calls), so that the carriers share one
// definition without depending on the tracer. New ids come from a counter run through
// SplitMix64's finaliser, seeded once from the system's random source: unique within the process,
// unpredictable across processes, and one atomic increment for a new trace's three words, without
// a lock or a system call on the request path.
import Instrumentation
import Synchronization

/// One span's place in a trace, as `traceparent` and `tracestate` carry it.
public struct TraceContext: Sendable, Hashable {
    /// 128 bits, never all zero.
    public let traceID: (high: UInt64, low: UInt64)
    /// The span this context names (the parent of spans started from it), never zero.
    public let spanID: UInt64
    /// The `sampled` flag: the caller records this trace.
    public let sampled: Bool
    /// The vendors' opaque `tracestate`, passed on unchanged.
    public let traceState: String?

    public init(traceID: (high: UInt64, low: UInt64), spanID: UInt64, sampled: Bool, traceState: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
        self.traceState = traceState
    }

    /// Parses a `traceparent` header value (and `tracestate`); nil when it is not a valid
    /// version-00 value, or names the invalid all-zero trace or span. A later version is read
    /// by its first four fields, as the specification asks.
    public init?(traceparent: String, traceState: String? = nil) {
        var text = traceparent
        let fields = text.withUTF8 { utf8 -> (UInt64, UInt64, UInt64, UInt64)? in
            guard utf8.count >= 55, utf8[2] == UInt8(ascii: "-"), utf8[35] == UInt8(ascii: "-"), utf8[52] == UInt8(ascii: "-"),
                  let version = Self.hex(utf8[0..<2]), version != 0xff,
                  let high = Self.hex(utf8[3..<19]), let low = Self.hex(utf8[19..<35]),
                  let span = Self.hex(utf8[36..<52]), let flags = Self.hex(utf8[53..<55]),
                  high | low != 0, span != 0,
                  utf8.count == 55 || (version > 0 && utf8[55] == UInt8(ascii: "-")) else { return nil }
            return (high, low, span, flags)
        }
        guard let (high, low, span, flags) = fields else { return nil }
        self.init(traceID: (high, low), spanID: span, sampled: flags & 1 == 1,
                  traceState: traceState.flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The trace context a served call binds for its task (and the tasks it starts).
    @TaskLocal public static var current: TraceContext?

    /// The current work's trace context: `current`, else swift-distributed-tracing's.
    public static var active: TraceContext? {
        current ?? InstrumentationContext.current?.traceContext
    }

    /// A new trace's first context (sampled).
    public static func newTrace() -> TraceContext {
        let first = IDSource.reserve(3)
        let (high, low, span) = (IDSource.id(first), IDSource.id(first + 1), IDSource.id(first + 2))
        // The trace is never all zero and the span never zero, as the specification requires.
        return TraceContext(traceID: (high == 0 ? 1 : high, low), spanID: span == 0 ? 1 : span, sampled: true)
    }

    /// The context of a new span in the same trace: this one's child.
    public func child() -> TraceContext {
        let span = IDSource.id(IDSource.reserve(1))
        return TraceContext(traceID: traceID, spanID: span == 0 ? 1 : span, sampled: sampled, traceState: traceState)
    }

    /// The `traceparent` value naming this span.
    public var traceparent: String {
        "00-\(traceIDHex)-\(Self.hex(spanID))-\(sampled ? "01" : "00")"
    }

    /// The trace id as 32 lower-case hex digits (as logs and trace back ends show it).
    public var traceIDHex: String { Self.hex(traceID.high) + Self.hex(traceID.low) }

    /// The span id as 16 lower-case hex digits.
    public var spanIDHex: String { Self.hex(spanID) }

    public static func == (lhs: TraceContext, rhs: TraceContext) -> Bool {
        lhs.traceID == rhs.traceID && lhs.spanID == rhs.spanID && lhs.sampled == rhs.sampled && lhs.traceState == rhs.traceState
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(traceID.high)
        hasher.combine(traceID.low)
        hasher.combine(spanID)
    }

    static func hex(_ value: UInt64) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: (0..<16).map { digits[Int((value >> UInt64(60 - 4 * $0)) & 0xf)] }, as: UTF8.self)
    }

    /// Lower-case hex digits only, as the specification requires.
    private static func hex(_ digits: Slice<UnsafeBufferPointer<UInt8>>) -> UInt64? {
        var value: UInt64 = 0
        for digit in digits {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = value << 4 | UInt64(digit - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = value << 4 | UInt64(digit - UInt8(ascii: "a") + 10)
            default: return nil
            }
        }
        return value
    }
}

/// Where new trace and span ids come from.
enum IDSource {
    private static let seed: UInt64 = .random(in: .min ... .max)
    private static let counter = Atomic<UInt64>(0)

    /// The first of `count` fresh sequence numbers, for one atomic increment.
    static func reserve(_ count: UInt64) -> UInt64 {
        counter.add(count, ordering: .relaxed).newValue - count + 1
    }

    /// The id of sequence number `n`. SplitMix64: a Weyl sequence through a finaliser, a
    /// bijection, so ids never repeat before 2^64 draws.
    static func id(_ n: UInt64) -> UInt64 {
        var z = seed &+ n &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The trace context's slot in `InstrumentationContext`.
public enum TraceContextKey: InstrumentationContextKey {
    public typealias Value = TraceContext
    public static var nameOverride: String? { "trace-context" }
}

extension InstrumentationContext {
    /// The current span's trace context, if any.
    public var traceContext: TraceContext? {
        get { self[TraceContextKey.self] }
        set { self[TraceContextKey.self] = newValue }
    }
}
