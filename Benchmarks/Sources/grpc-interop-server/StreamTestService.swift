// interop.streams.StreamTest (Benchmarks/Protos/interop_streams.proto): one method of each RPC
// kind with the knobs the streaming interoperability tests turn (long, huge and failing streams,
// slow readers, early ends), and Stats, which shows whether a handler has noticed that its call
// ended (a cancelled client, a deadline) and how.
import BenchProtos
import GRPCHTTP2
import Synchronization

/// The handlers' bookkeeping: how many run, and what became of each tagged call.
final class CallRegistry: Sendable {
    struct Record {
        var running = true
        var outcome = ""
        var sent: Int64 = 0
        var received: Int64 = 0
    }

    private struct State {
        var active = 0
        var tagged: [String: Record] = [:]
    }

    private let state = Mutex(State())

    func begin(_ tag: String?) {
        state.withLock { state in
            state.active += 1
            if let tag { state.tagged[tag] = Record() }
        }
    }

    func end(_ tag: String?, outcome: String) {
        state.withLock { state in
            state.active -= 1
            if let tag {
                state.tagged[tag]?.running = false
                state.tagged[tag]?.outcome = outcome
            }
        }
    }

    func count(_ tag: String?, sent: Int64 = 0, received: Int64 = 0) {
        guard let tag else { return }
        state.withLock { state in
            state.tagged[tag]?.sent += sent
            state.tagged[tag]?.received += received
        }
    }

    func stats(tag: String) -> StatsReply {
        state.withLock { state in
            var reply = StatsReply(active: Int64(state.active))
            if let record = state.tagged[tag] {
                reply.tagSeen = true
                reply.tagRunning = record.running
                reply.tagOutcome = record.outcome
                reply.tagSent = record.sent
                reply.tagReceived = record.received
            }
            return reply
        }
    }
}

/// One handler's view of its call: its options (request metadata) and its counters.
struct CallScope {
    let context: ServerContext
    let registry: CallRegistry
    var tag: String? { context.requestMetadata["x-tag"] }

    func integer(_ name: String) -> Int? { context.requestMetadata[name].flatMap { Int($0) } }

    /// The failure x-fail-code and x-fail-message describe, if any.
    var failure: RPCError? {
        guard let code = integer("x-fail-code").flatMap(StatusCode.init(rawValue:)), code != .ok else { return nil }
        return RPCError(code, context.requestMetadata["x-fail-message"] ?? "")
    }

    func sent() { registry.count(tag, sent: 1) }
    func received() { registry.count(tag, received: 1) }

    /// x-read-delay-ms, before taking a request message.
    func readDelay() async throws {
        if let delay = integer("x-read-delay-ms"), delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
    }
}

final class StreamTestService: StreamTestProvider {
    static let maxCount: Int32 = 1_000_000
    static let maxPayloadBytes: Int32 = 4 * 1024 * 1024

    private let registry = CallRegistry()

    /// Runs a handler with its bookkeeping and the x-echo-* metadata echo.
    private func tracked<Result>(_ context: ServerContext, _ body: (CallScope) async throws -> Result) async throws -> Result {
        for (name, value) in context.requestMetadata where name.hasPrefix("x-echo-") || name.hasSuffix("-bin") {
            context.addResponseHeader(name, value)
            context.addTrailer(name, value)
        }
        let scope = CallScope(context: context, registry: registry)
        registry.begin(scope.tag)
        do {
            let result = try await body(scope)
            registry.end(scope.tag, outcome: "OK")
            return result
        } catch {
            registry.end(scope.tag, outcome: RPCError(from: error).code.description)
            throw error
        }
    }

    func echo(_ request: Item, context: ServerContext) async throws -> Item {
        try await tracked(context) { scope in
            if let failure = scope.failure { throw failure }
            return request
        }
    }

    func count(_ request: CountRequest, responses: RPCWriter<Item>, context: ServerContext) async throws {
        try await tracked(context) { scope in
            guard (0...Self.maxCount).contains(request.count), (0...Self.maxPayloadBytes).contains(request.payloadBytes),
                  request.failAfter >= 0, request.delayMs >= 0 else {
                throw RPCError(.invalidArgument, "count 0-\(Self.maxCount), payload_bytes 0-\(Self.maxPayloadBytes), fail_after and delay_ms >= 0")
            }
            let failure = StatusCode(rawValue: Int(request.failCode)).flatMap { code in
                code == .ok ? nil : RPCError(code, request.failMessage)
            }
            if request.failCode != 0, failure == nil {
                throw RPCError(.invalidArgument, "fail_code \(request.failCode) is not a status code")
            }
            var item = Item(payload: [UInt8](repeating: UInt8(ascii: "x"), count: Int(request.payloadBytes)))
            for sequence in 0..<Int64(request.count) {
                if let failure, sequence == request.failAfter { throw failure }
                if request.delayMs > 0 { try await Task.sleep(for: .milliseconds(Int(request.delayMs))) }
                item.sequence = sequence
                try await responses.write(item)
                scope.sent()
            }
            if let failure { throw failure }
        }
    }

    func sum(_ requests: RPCAsyncSequence<Item>, context: ServerContext) async throws -> Total {
        try await tracked(context) { scope in
            let failAfter = scope.integer("x-fail-after")
            var total = Total()
            var iterator = requests.makeAsyncIterator()
            while true {
                if let failAfter, let failure = scope.failure, total.count >= failAfter { throw failure }
                try await scope.readDelay()
                guard let item = try await iterator.next() else { break }
                scope.received()
                total.count += 1
                total.payloadBytes += Int64(item.payload.count)
                total.sequenceSum += item.sequence
            }
            return total
        }
    }

    func chat(_ requests: RPCAsyncSequence<Item>, responses: RPCWriter<Item>, context: ServerContext) async throws {
        try await tracked(context) { scope in
            let failAfter = scope.integer("x-fail-after")
            let endAfter = scope.integer("x-end-after")
            var echoed = 0
            var iterator = requests.makeAsyncIterator()
            while true {
                if let failAfter, let failure = scope.failure, echoed >= failAfter { throw failure }
                if let endAfter, echoed >= endAfter { return }
                try await scope.readDelay()
                guard let item = try await iterator.next() else { return }
                scope.received()
                try await responses.write(item)
                scope.sent()
                echoed += 1
            }
        }
    }

    func stats(_ request: StatsRequest, context: ServerContext) async throws -> StatsReply {
        registry.stats(tag: request.tag)
    }
}
