// Exports finished spans over OTLP/HTTP with the JSON encoding (OpenTelemetry protocol
// specification: POST <endpoint>/v1/traces, Content-Type application/json, ids as hex), which
// every OpenTelemetry Collector and most trace back ends accept.
//
// We do not depend on swift-otel: on these 2-core machines a clean build of a package using it
// took 10 min 45 s (it brings SwiftNIO, swift-nio-ssl with BoringSSL, swift-crypto and gRPC;
// BENCHMARKS.md "swift-otel"), against seconds for this file, and our services need only its
// trace export. Spans are batched in memory (at most
// `maxQueued`; past that new ones are dropped and counted in the log) and sent once a second,
// one request at a time, from an event loop of its own, so exporting never blocks a call. Only
// http:// endpoints are supported (a collector beside the service, as a sidecar or a node agent,
// is the usual shape); https is refused at start rather than silently sent in the clear.
import EventLoop
import Logging
import Synchronization
import TraceContext
import Tracing

/// Sends spans to an OTLP/HTTP collector.
public final class OTLPExporter: SpanExporter {
    public struct InvalidEndpoint: Error, CustomStringConvertible {
        public let description: String
    }

    static let maxQueued = 4096
    static let interval: Duration = .seconds(1)
    private let host: String
    private let port: Int
    private let path: String
    private let serviceName: String
    private let logger: Logger
    private let loop: EventLoop
    private let queue = Mutex<(spans: [FinishedSpan], dropped: Int)>(([], 0))
    private let sender: LoopBound<OTLPSender>

    /// `endpoint`: `http://host:port[/base]`.
    public init(endpoint: String, serviceName: String, logger: Logger) throws(InvalidEndpoint) {
        guard endpoint.hasPrefix("http://") else {
            throw InvalidEndpoint(description: "only http:// endpoints are supported, got \(endpoint)")
        }
        let rest = endpoint.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        var base = String(rest.dropFirst(authority.count))
        while base.hasSuffix("/") { base.removeLast() }
        let hostPart = authority.split(separator: ":", maxSplits: 1)
        guard let first = hostPart.first, !first.isEmpty else { throw InvalidEndpoint(description: "no host in \(endpoint)") }
        let port = hostPart.count > 1 ? Int(hostPart[1]) : 4318
        guard let port, (1...65535).contains(port) else { throw InvalidEndpoint(description: "bad port in \(endpoint)") }
        host = String(first)
        self.port = port
        path = base + "/v1/traces"
        self.serviceName = serviceName
        self.logger = logger
        loop = EventLoop(name: "otlp")
        sender = LoopBound(OTLPSender(loop: loop, host: host, port: port, logger: logger), loop: loop)
        let sender = self.sender
        loop.execute { [self] in
            sender.value.schedule(every: Self.interval) { [self] in self.sendBatch() }
        }
    }

    public func export(_ span: FinishedSpan) {
        queue.withLock { queue in
            if queue.spans.count < Self.maxQueued { queue.spans.append(span) } else { queue.dropped += 1 }
        }
    }

    public func flush() {
        loop.execute { [self] in sendBatch() }
    }

    /// Sends what is queued, waiting for a send in flight first, then stops the loop: at most
    /// about 6 s (a send's own 5 s timeout, and a last one).
    public func shutdown() async {
        let deadline = ContinuousClock.now + .seconds(6)
        while ContinuousClock.now < deadline {
            let sender = self.sender
            let queued = queue.withLock { !$0.spans.isEmpty }
            let busy = await withCheckedContinuation { continuation in
                loop.execute { [self] in
                    if !sender.value.busy { sendBatch() }
                    continuation.resume(returning: sender.value.busy)
                }
            }
            if !busy && !queued { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        loop.shutdownGracefully()
    }

    /// On the loop: takes the queue and sends it, unless a send is still in flight.
    private func sendBatch() {
        guard !sender.value.busy else { return }
        let (spans, dropped) = queue.withLock { queue in
            defer { queue = ([], 0) }
            return queue
        }
        if dropped > 0 { logger.warning("spans dropped: the collector is not keeping up", metadata: ["dropped": "\(dropped)"]) }
        guard !spans.isEmpty else { return }
        let body = Array(OTLPJSON.traces(spans, serviceName: serviceName).utf8)
        let head = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        sender.value.send(Array(head.utf8) + body)
    }
}

/// One HTTP request at a time to the collector; on its loop only.
final class OTLPSender: IOHandler {
    private let loop: EventLoop
    private let host: String
    private let port: Int
    private let logger: Logger
    private var fd: Int32 = -1
    private var request: [UInt8] = []
    private var written = 0
    private var response: [UInt8] = []
    private var connected = false
    private var timeout: TimerID?
    /// The last failure logged, so a collector that is down is logged once, not every second.
    private var lastFailure: String?
    var busy: Bool { fd >= 0 }

    init(loop: EventLoop, host: String, port: Int, logger: Logger) {
        (self.loop, self.host, self.port, self.logger) = (loop, host, port, logger)
    }

    func schedule(every interval: Duration, _ work: @escaping () -> Void) {
        loop.schedule(after: interval) { [self] in
            work()
            schedule(every: interval, work)
        }
    }

    func send(_ bytes: [UInt8]) {
        do {
            fd = try Socket.connect(host: host, port: port)
        } catch {
            return finish(failure: "\(error)")
        }
        (request, written, response, connected) = (bytes, 0, [], false)
        loop.register(fd, for: .write, handler: self)
        timeout = loop.schedule(after: .seconds(5)) { [self] in finish(failure: "no answer within 5 s") }
    }

    func handleIO(_ events: IOEvents) {
        if !connected {
            if let error = Socket.connectResult(fd) { return finish(failure: "\(error)") }
            connected = true
        }
        while written < request.count {
            switch Socket.write(fd, request, from: written) {
            case .transferred(let count): written += count
            case .wouldBlock: return
            case .closed, .failed: return finish(failure: "connection lost while sending")
            }
        }
        loop.modify(fd, for: .read)
        while true {
            switch Socket.read(fd, appendingTo: &response) {
            case .transferred:
                break
            case .wouldBlock:
                return
            case .closed:
                return answered()
            case .failed:
                return finish(failure: "connection lost while reading the answer")
            }
        }
    }

    /// The collector closed after its answer: 2xx is success.
    private func answered() {
        let statusLine = response.prefix { $0 != 13 }
        let parts = statusLine.split(separator: UInt8(ascii: " "))
        let status = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : ""
        finish(failure: status.hasPrefix("2") ? nil : "the collector answered \(String(decoding: statusLine, as: UTF8.self))")
    }

    private func finish(failure: String?) {
        if let timeout { loop.cancel(timeout) }
        timeout = nil
        if fd >= 0 {
            loop.deregister(fd)
            Socket.close(fd)
            fd = -1
        }
        if let failure, failure != lastFailure {
            logger.warning("exporting spans failed", metadata: ["collector": "\(host):\(port)", "error": "\(failure)"])
        } else if failure == nil, lastFailure != nil {
            logger.info("exporting spans again", metadata: ["collector": "\(host):\(port)"])
        }
        lastFailure = failure
    }
}

/// The OTLP/JSON encoding of a batch of spans.
enum OTLPJSON {
    static func traces(_ spans: [FinishedSpan], serviceName: String) -> String {
        var json = #"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"#
        JSONLogHandler.appendString(serviceName, to: &json)
        json += #"}}]},"scopeSpans":[{"scope":{"name":"food-platform"},"spans":["#
        for (index, span) in spans.enumerated() {
            if index > 0 { json += "," }
            append(span, to: &json)
        }
        json += "]}]}]}"
        return json
    }

    static func append(_ span: FinishedSpan, to json: inout String) {
        json += #"{"traceId":""# + span.context.traceIDHex + #"","spanId":""# + span.context.spanIDHex + "\""
        if let parent = span.parentSpanID {
            json += #","parentSpanId":""# + TraceContext(traceID: span.context.traceID, spanID: parent, sampled: true).spanIDHex + "\""
        }
        json += #","name":"#
        JSONLogHandler.appendString(span.name, to: &json)
        json += #","kind":\#(kind(span.kind)),"startTimeUnixNano":"\#(span.startNanosecondsSinceEpoch)","endTimeUnixNano":"\#(span.endNanosecondsSinceEpoch)","#
        json += #""attributes":"#
        appendAttributes(span.attributes, to: &json)
        if !span.events.isEmpty {
            json += #","events":["#
            for (index, event) in span.events.enumerated() {
                if index > 0 { json += "," }
                json += #"{"timeUnixNano":"\#(event.nanosecondsSinceEpoch)","name":"#
                JSONLogHandler.appendString(event.name, to: &json)
                var attributes: [(String, SpanAttribute)] = []
                event.attributes.forEach { attributes.append(($0, $1)) }
                json += #","attributes":"#
                appendAttributes(attributes, to: &json)
                json += "}"
            }
            json += "]"
        }
        if let status = span.status {
            json += #","status":{"code":\#(status.isError ? 2 : 1)"#
            if let message = status.message {
                json += #","message":"#
                JSONLogHandler.appendString(message, to: &json)
            }
            json += "}"
        }
        json += "}"
    }

    private static func appendAttributes(_ attributes: [(String, SpanAttribute)], to json: inout String) {
        json += "["
        for (index, (key, value)) in attributes.enumerated() {
            if index > 0 { json += "," }
            json += #"{"key":"#
            JSONLogHandler.appendString(key, to: &json)
            json += #","value":"#
            switch value {
            case .int32(let number): json += #"{"intValue":"\#(number)"}"#
            case .int64(let number): json += #"{"intValue":"\#(number)"}"#
            case .double(let number): json += #"{"doubleValue":\#(number.isFinite ? "\(number)" : "0")}"#
            case .bool(let flag): json += #"{"boolValue":\#(flag)}"#
            case .string(let text):
                json += #"{"stringValue":"#
                JSONLogHandler.appendString(text, to: &json)
                json += "}"
            default:
                json += #"{"stringValue":"#
                JSONLogHandler.appendString("\(value)", to: &json)
                json += "}"
            }
            json += "}"
        }
        json += "]"
    }

    /// OTLP's SpanKind numbers.
    private static func kind(_ kind: SpanKind) -> Int {
        switch kind {
        case .internal: 1
        case .server: 2
        case .client: 3
        case .producer: 4
        case .consumer: 5
        }
    }
}
